"""Every input checked at the door, over real HTTP against the real app: body size, page
size and offsets, names, what a cluster could never run, and every value that names a
file, a model or a format (issue 8 items 2 and 3). Each refusal is a 4xx naming the field;
nothing refused is stored."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from fovea.config import Settings
from fovea.platform.api.app import create_app
from tests.support.servers import LiveServer, free_port
from tests.support.specs import digits_spec, merged

TOKEN = "limits-token"


def spec(**overrides):  # type: ignore[no-untyped-def]
    return digits_spec(**merged({"name": "lim", "model": {"arch": "resnet18"}}, overrides))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("limits-home")
    root = tmp_path_factory.mktemp("limits-data")
    (root / "folder" / "cls").mkdir(parents=True)
    (root / "weights.pt").write_bytes(b"not really weights")
    (root / "x_Weights.y.pt").write_bytes(b"")
    (root / "weights_dir.pt").mkdir()
    (root / "notes.txt").write_text("x")
    settings = Settings(
        home=home,
        data_roots=[root],
        api_token=TOKEN,
        max_job_cpus=8,
        max_job_gpus=1,
        max_epochs=50,
        max_image_size=512,
        api_max_body_bytes=64 * 1024,
    )
    _register_model(settings.tracking_uri)
    with LiveServer(create_app(settings), free_port()) as live:
        live.root = root  # type: ignore[attr-defined]
        yield live


def _register_model(tracking_uri: str) -> None:
    """A registered model with a champion, as a finished job leaves one (the submit-time
    check reads only the registry, so its version needs no artifacts)."""
    from fovea.tracking._mlflow import make_client

    client = make_client(tracking_uri)
    client.create_registered_model("exists")
    version = client.create_model_version("exists", source="/nowhere")
    client.set_registered_model_alias("exists", "champion", version.version)


@pytest.fixture
def client(server: LiveServer):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as c:
        yield c


def _refused(r: httpx.Response, status: int, field: str, words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message", "detail"}, body
    assert any(d["field"] == field for d in body["detail"]), body
    assert words in body["message"], body["message"]


def _total(client: httpx.Client) -> int:
    return client.get("/jobs", params={"limit": 1}).json()["total"]


# ---- request size, pages, names --------------------------------------------------------------


def test_body_over_the_limit_is_413_declared_or_streamed(client: httpx.Client) -> None:
    before = _total(client)
    huge = spec(
        dataset={"uri": "builtin://digits", "class_map": {str(i): "c" * 100 for i in range(900)}}
    )
    _refused(client.post("/jobs", json=huge), 413, "body", "over 65536 bytes")

    def chunks():  # no Content-Length: the size is counted as the body streams in
        yield b'{"name": "x", "pad": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}'

    r = client.post("/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    _refused(r, 413, "body", "over 65536 bytes")
    assert _total(client) == before


@pytest.mark.parametrize(
    "params,field",
    [
        ({"limit": 501}, "limit"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": "99999999999999999999"}, "offset"),
        ({"offset": 2**31}, "offset"),
        ({"project": "p" * 101}, "project"),
        ({"state": "sleeping"}, "state"),
    ],
)
def test_list_bounds(client: httpx.Client, params: dict, field: str) -> None:
    _refused(client.get("/jobs", params=params), 422, field, field)


def test_largest_offset_is_an_empty_page(client: httpx.Client) -> None:
    r = client.get("/jobs", params={"offset": 2**31 - 1})
    assert r.status_code == 200 and r.json()["items"] == []


def test_list_items_do_not_carry_specs(client: httpx.Client) -> None:
    r = client.post("/jobs", json=spec(name="listed"))
    assert r.status_code == 201, r.text
    items = client.get("/jobs", params={"limit": 5}).json()["items"]
    assert items and all("spec" not in j and "events" not in j for j in items)
    assert client.get(f"/jobs/{r.json()['id']}").json()["spec"]["name"] == "listed"


@pytest.mark.parametrize(
    "payload,field,words",
    [
        (spec(name="n" * 129), "name", "pattern"),
        (spec(project="p" * 101), "project", "pattern"),
        (spec(register_as="r" * 129), "register_as", "pattern"),
        (spec(name="a/b"), "name", "pattern"),
    ],
)
def test_names(client: httpx.Client, payload, field: str, words: str) -> None:
    _refused(client.post("/jobs", json=payload), 422, field, words)


def test_long_job_ids_and_model_names(client: httpx.Client) -> None:
    _refused(client.get("/jobs/" + "j" * 65), 422, "job_id", "at most 64")
    _refused(client.get("/models/" + "m" * 257), 422, "name", "at most 256")


@pytest.mark.parametrize("name", ["a%3Ab", "..", "a%2Fb"])
def test_model_names_mlflow_refuses_are_404(client: httpx.Client, name: str) -> None:
    r = client.get(f"/models/{name}")
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "not_found"


def test_registered_model_is_found(client: httpx.Client) -> None:
    r = client.get("/models/exists")
    assert r.status_code == 200 and r.json()["champion_version"] == 1


# ---- what a cluster could never run ------------------------------------------------------------


@pytest.mark.parametrize(
    "payload,field,words",
    [
        (spec(resources={"cpus": 1024}), "resources.cpus", "FOVEA_MAX_JOB_CPUS"),
        (spec(resources={"cpus": 9}), "resources.cpus", "allows per job (8"),
        (spec(resources={"gpus": 2}), "resources.gpus", "FOVEA_MAX_JOB_GPUS"),
        (spec(train={"epochs": 51}), "train.epochs", "FOVEA_MAX_EPOCHS"),
        (spec(train={"epochs": 1, "image_size": 640}), "train.image_size", "FOVEA_MAX_IMAGE_SIZE"),
        (spec(resources={"cpus": 2000}), "resources.cpus", "less than or equal to 1024"),
    ],
)
def test_requests_over_the_configured_limits(
    client: httpx.Client, payload, field: str, words: str
) -> None:
    _refused(client.post("/jobs", json=payload), 422, field, words)


def test_at_the_limits_is_accepted(client: httpx.Client) -> None:
    payload = spec(
        name="at-limits", resources={"cpus": 8, "gpus": 1}, train={"epochs": 50, "image_size": 512}
    )
    r = client.post("/jobs", json=payload)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "raw,field",
    [
        ('{"epochs": 1, "lr": 1e999}', "train.lr"),
        ('{"epochs": 1, "grad_clip_norm": Infinity}', "train.grad_clip_norm"),
        ('{"epochs": 1, "warmup_epochs": NaN}', "train.warmup_epochs"),
        ('{"epochs": 1, "loss_weights": {"ce": -1e308}}', "train.loss_weights.ce"),
        ('{"epochs": 1, "early_stopping_patience": 100000}', "train.early_stopping_patience"),
    ],
)
def test_nonsense_numbers(client: httpx.Client, raw: str, field: str) -> None:
    body = json.dumps(spec()).replace('{"epochs": 1}', raw)
    r = client.post("/jobs", content=body, headers={"Content-Type": "application/json"})
    _refused(r, 422, field, field)


@pytest.mark.parametrize(
    "payload,field,words",
    [
        (spec(train={"epochs": 1, "loss_weights": {"ce": 1.0}}), "train.loss_weights",
         "single loss"),
        (
            spec(task="segmentation", dataset={"uri": "builtin://shapes"}, model={"arch": "unet"},
                 train={"epochs": 1, "loss_weights": {"focal": 1.0}}),
            "train.loss_weights.focal",
            "valid: ce, dice",
        ),
        (
            spec(task="segmentation", dataset={"uri": "builtin://shapes"}, model={"arch": "unet"},
                 train={"epochs": 1, "loss_weights": {"ce": 0, "dice": 0}}),
            "train.loss_weights",
            "at least one",
        ),
        (
            spec(task="detection", dataset={"uri": "builtin://shapes"}, model={"arch": "yolo_n"},
                 train={"epochs": 1, "loss_weights": {"ce": 1.0}}),
            "train.loss_weights.ce",
            "valid: cls, box",
        ),
        (
            spec(task="detection", dataset={"uri": "builtin://shapes"}, model={"arch": "yolo_n"},
                 train={"epochs": 1, "image_size": 100}),
            "train.image_size",
            "multiple of 32",
        ),
    ],
)  # fmt: skip
def test_losses_and_sizes_per_task(client: httpx.Client, payload, field: str, words: str) -> None:
    _refused(client.post("/jobs", json=payload), 422, field, words)


# ---- names of models, files and formats ------------------------------------------------------


@pytest.mark.parametrize(
    "weights,words",
    [
        ("models:/../../etc", "not a model URI"),
        ("models:/a:b@champion", "not found"),
        ("models:/nonexistent@champion", "'nonexistent' not found"),
        ("models:/exists@staging", "no alias 'staging'"),
        ("models:/exists/7", "no version 7"),
        ("ResNet18_Weights.NOPE", "valid: ResNet18_Weights.IMAGENET1K_V1, DEFAULT"),
        ("ResNet50_Weights.IMAGENET1K_V2", "are not weights of resnet18"),
        ("/etc/passwd", "outside the configured data roots"),
        ("x_Weights.y.pt", "outside the configured data roots"),  # relative to the server's cwd
        ("{root}/weights_dir.pt", "is not a file"),
        ("{root}/folder", "is not a file"),
        ("{root}/notes.txt", "a weights file ends with .pt, .pth, .safetensors"),
        ("{root}/missing.pt", "does not exist"),
    ],
)
def test_weights_checked_at_submit(
    client: httpx.Client, server: LiveServer, weights: str, words: str
) -> None:
    weights = weights.format(root=server.root)  # type: ignore[attr-defined]
    r = client.post("/jobs", json=spec(model={"arch": "resnet18", "weights": weights}))
    _refused(r, 422, "model.weights", words)


@pytest.mark.parametrize(
    "model,stored",
    [
        ({"arch": "resnet18", "weights": "models:/exists@champion"}, "models:/exists@champion"),
        ({"arch": "resnet18", "weights": "models:/exists/1"}, "models:/exists/1"),
        ({"arch": "resnet18", "weights": "ResNet18_Weights.IMAGENET1K_V1"}, None),
        ({"arch": "resnet50", "weights": "IMAGENET1K_V2"}, None),
        ({"arch": "resnet18", "weights": "DEFAULT"}, None),
        ({"arch": "resnet18", "weights": "{root}/x_Weights.y.pt"}, "{root}/x_Weights.y.pt"),
    ],
)
def test_good_weights_are_accepted(
    client: httpx.Client, server: LiveServer, model: dict, stored: str | None
) -> None:
    root = str(Path(server.root).resolve())  # type: ignore[attr-defined]
    model = {k: v.format(root=root) for k, v in model.items()}
    r = client.post("/jobs", json=spec(name="weights-ok", model=model))
    assert r.status_code == 201, r.text
    expected = stored.format(root=root) if stored else model["weights"]
    assert r.json()["spec"]["model"]["weights"] == expected


def test_own_models_have_no_torchvision_weights(client: httpx.Client) -> None:
    r = client.post("/jobs", json=spec(model={"arch": "smallcnn", "weights": "DEFAULT"}))
    _refused(r, 422, "model.weights", "smallcnn has no torchvision weights")
    seg = spec(task="segmentation", dataset={"uri": "builtin://shapes"})
    seg["model"] = {"arch": "unet", "backbone": "tiny", "weights": "DEFAULT"}
    _refused(client.post("/jobs", json=seg), 422, "model.weights", "tiny has no torchvision")


@pytest.mark.parametrize(
    "task,model,fmt,words",
    [
        ("detection", {"arch": "yolo_n"}, "imagefolder", "not a detection format; valid: coco"),
        ("segmentation", {"arch": "unet"}, "imagefolder", "valid: masks, yolo, coco"),
        ("classification", {"arch": "resnet18"}, "voc", "not a classification format"),
        ("classification", {"arch": "resnet18"}, "builtin", "builtin is the format of"),
    ],
)
def test_format_must_fit_the_task(
    client: httpx.Client, server: LiveServer, task: str, model: dict, fmt: str, words: str
) -> None:
    folder = str(server.root / "folder")  # type: ignore[attr-defined]
    payload = spec(task=task, model=model, dataset={"uri": folder, "format": fmt})
    _refused(client.post("/jobs", json=payload), 422, "dataset.format", words)


@pytest.mark.parametrize(
    "payload,field,words",
    [
        (spec(model={"arch": "resnet18", "backbone": "resnet50"}), "model.backbone", "take no"),
        (
            spec(task="detection", dataset={"uri": "builtin://shapes"},
                 model={"arch": "yolo_n", "backbone": "vgg16"}),
            "model.backbone",
            "valid: tiny, resnet18",
        ),
        (spec(dataset={"uri": "builtin://digits", "class_map": {"0": "a"}}), "dataset.class_map",
         "masks format only"),
        (
            spec(task="segmentation", model={"arch": "unet"},
                 dataset={"uri": "{folder}", "format": "masks", "ignore_index": 1,
                          "class_map": {"0": "bg", "255": "fg"}}),
            "dataset.ignore_index",
            "choose a value >= 2",
        ),
        (spec(dataset={"uri": "builtin://shapes?n=5"}), "dataset.uri", "not classification"),
        (
            spec(task="segmentation", model={"arch": "unet"},
                 dataset={"uri": "builtin://shapes?n=0"}),
            "dataset.uri",
            "n must be an integer in [1, 100000]",
        ),
        (spec(dataset={"uri": "{folder}/cls/../../.."}), "dataset.uri", "outside"),
        (spec(task="painting"), "task", "valid tasks: classification, detection, segmentation"),
    ],
)  # fmt: skip
def test_models_and_datasets_checked_at_submit(
    client: httpx.Client, server: LiveServer, payload, field: str, words: str
) -> None:
    folder = str(server.root / "folder")  # type: ignore[attr-defined]
    payload = json.loads(json.dumps(payload).replace("{folder}", folder))
    _refused(client.post("/jobs", json=payload), 422, field, words)


def test_refused_specs_store_nothing(client: httpx.Client) -> None:
    before = _total(client)
    for payload in (spec(resources={"cpus": 1024}), spec(model={"arch": "x"})):
        assert client.post("/jobs", json=payload).status_code == 422
    assert _total(client) == before


# ---- registration opt-out ----------------------------------------------------------------------


def test_register_as_absent_null_or_named(client: httpx.Client) -> None:
    absent = client.post("/jobs", json=spec(name="reg-default")).json()
    assert absent["spec"]["register_as"] == "reg-default"
    opted_out = client.post("/jobs", json=spec(name="reg-none", register_as=None)).json()
    assert opted_out["spec"]["register_as"] is None  # null: do not register
    named = client.post("/jobs", json=spec(name="reg-named", register_as="other")).json()
    assert named["spec"]["register_as"] == "other"
    # the stored spec keeps its meaning when read back (the worker's view of it)
    assert client.get(f"/jobs/{opted_out['id']}").json()["spec"]["register_as"] is None


# ---- bodies that are not JSON ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"{not json", b"\xff\xfe\x00garbage", b"", b"[1, 2]", b'"text"', b"null"]
)
def test_unparseable_bodies_are_422(client: httpx.Client, raw: bytes) -> None:
    r = client.post("/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request" and r.json()["detail"]


def test_wrong_method_is_405_with_allow(client: httpx.Client) -> None:
    r = client.delete("/jobs")
    assert r.status_code == 405 and "POST" in r.headers["allow"]
    assert r.json()["error"] == "method_not_allowed"
