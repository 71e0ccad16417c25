"""Monitoring end to end: a model served on the stack's Ray cluster over HTTP, every image
logged, drift reports that stay quiet on the validation distribution and name what moved
when the images are blurred, and the verdict change as a model event."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from fovea.tasks import DataConfig, get_task
from tests.support.specs import digits_spec
from tests.support.stack import Stack

pytestmark = pytest.mark.slow
MODEL = "digits-monitor"


def png(pixels: np.ndarray, *, blur: float = 0.0) -> bytes:
    image = Image.fromarray(pixels)
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(stack: Stack) -> np.ndarray:
    """Train (one epoch: drift is about the pictures, not how good the model is) and register
    the model; returns validation images as the model saw them."""
    spec = digits_spec(
        quick=True,
        name=MODEL,
        register_as=MODEL,
        dataset={"val_split": 0.2},
        train={"epochs": 1, "image_size": 32},
    )
    job = stack.wait(stack.http.post("/jobs", json=spec).json()["id"], {"succeeded", "failed"})
    assert job["state"] == "succeeded", job["error"]
    assert "drift_reference" in [e["kind"] for e in job["events"]]
    bundle = get_task("classification").build_data(
        DataConfig(uri="builtin://digits", format="builtin", image_size=32)
    )
    return bundle.val.data.images.permute(0, 2, 3, 1).numpy()  # uint8 [359, 36, 36, 3]


def predict(stack: Stack, images: list[bytes], **params) -> dict:  # type: ignore[no-untyped-def]
    files = [("files", (f"digit{i}.png", data)) for i, data in enumerate(images)]
    r = stack.http.post(f"/models/{MODEL}/predict", files=files, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_clean_then_blurred_images_drift_and_say_why(
    stack: Stack, served: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = [png(pixels) for pixels in served[:150]]
    for start in range(0, 150, 50):
        out = predict(stack, clean[start : start + 50])
        assert out["version"] == 1 and out["task"] == "classification"
        assert all(p["ok"] and "label" in p and len(p["probabilities"]) == 10
                   for p in out["predictions"])  # fmt: skip
    log = stack.http.get(f"/models/{MODEL}/predictions", params={"limit": 500}).json()["items"]
    assert len(log) == 150 and {row["source"] for row in log} == {"api"}
    assert log[0]["stats"]["width"] == 36 and "confidence" in log[0]["summary"]

    ok = stack.http.post(f"/models/{MODEL}/drift", params={"window": 150}).json()
    assert ok["verdict"] == "ok", ok["reasons"]
    assert ok["n_live"] == 150 and ok["n_reference"] == len(served)
    mmd = next(t for t in ok["tests"] if t["method"] == "mmd")
    assert mmd["p_value"] > 0.05

    blurred = [png(pixels, blur=2.0) for pixels in served[150:300]]
    for start in range(0, 150, 50):
        predict(stack, blurred[start : start + 50])
    drift = stack.http.post(f"/models/{MODEL}/drift", params={"window": 150}).json()
    assert drift["verdict"] == "drift", drift["reasons"]
    moved = {t["name"] for t in drift["tests"] if t["significant"]}
    assert "statistics/sharpness" in moved
    assert any("statistics/sharpness" in reason for reason in drift["reasons"])

    events = stack.http.get(f"/models/{MODEL}/events", params={"kind": "drift_verdict"}).json()
    assert [(e["value"], e["data"]["previous"]) for e in events] == [
        ("ok", None),
        ("drift", "ok"),
    ]
    history = stack.http.get(f"/models/{MODEL}/drift").json()
    assert [h["verdict"] for h in history["history"][:2]] == ["drift", "ok"]
    plot = stack.http.get(drift["plots"][0])
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    assert stack.http.get(drift["plots"][1]).content.startswith(b"\x89PNG")

    # the kept copies of the drifting window's images: the bytes that were sent
    kept = stack.http.get(f"/models/{MODEL}/predictions", params={
        "sampled": "true", "limit": 500, "from_id": drift["first_prediction_id"],
        "before_id": drift["last_prediction_id"] + 1}).json()["items"]  # fmt: skip
    assert len(kept) == 150 and all(row["image"] for row in kept)
    assert stack.http.get(kept[-1]["image"]).content == blurred[0]
    _drift_page_shows_the_window(stack, monkeypatch, drift["id"])


def _drift_page_shows_the_window(stack: Stack, monkeypatch, report_id: int) -> None:  # type: ignore[no-untyped-def]
    """The dashboard's drift page, under AppTest, the model chosen (other tests' models share
    the stack): the verdict and the blurred images of the drifting window (default: the
    newest report that drifted)."""
    from streamlit.testing.v1 import AppTest

    from tests.support.dashboard import APP
    from tests.support.servers import TOKEN

    monkeypatch.setenv("FOVEA_DASHBOARD_API_URL", stack.url)
    monkeypatch.setenv("FOVEA_API_TOKEN", TOKEN)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.switch_page("views/drift.py")
    at.run()
    assert not at.exception, at.exception
    at.selectbox(key="drift_model").select(MODEL).run()
    assert not at.exception, at.exception
    assert at.metric[0].value == "drift"
    assert at.selectbox(key="drift_window").value == report_id
    images = at.get("image")
    assert len(images) >= 2 + 8, len(images)  # two plots, eight live images
    captions = [c.value for c in at.caption]
    assert any("8 newest kept images of predictions" in c and "drift" in c for c in captions)


def test_bad_requests_get_clear_errors(stack: Stack, served: np.ndarray) -> None:
    good = png(served[0])
    truncated = good[: len(good) // 2]
    mixed = predict(stack, [good, b"not an image at all", truncated])
    assert [p["ok"] for p in mixed["predictions"]] == [True, False, False]
    assert "digit1.png" in mixed["predictions"][1]["error"]

    files = [("files", ("junk.txt", b"hello"))]
    r = stack.http.post(f"/models/{MODEL}/predict", files=files)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "junk.txt"

    huge = Image.new("L", (20000, 20000))
    buffer = io.BytesIO()
    huge.save(buffer, format="PNG")
    r = stack.http.post(
        f"/models/{MODEL}/predict", files=[("files", ("huge.png", buffer.getvalue()))]
    )
    assert r.status_code == 422 and "huge.png" in r.json()["message"]
    assert "400000000 pixels" in r.json()["message"] and "not decoded" in r.json()["message"]

    r = stack.http.post(f"/models/{MODEL}/predict", json={"images": []})
    assert r.status_code == 422 and "no images" in r.json()["message"]
    r = stack.http.post(
        f"/models/{MODEL}/predict", json={"images": [base64.b64encode(good).decode()]}
    )
    assert r.status_code == 200 and r.json()["predictions"][0]["ok"]

    r = stack.http.post("/models/no-such-model/predict", files=[("files", ("a.png", good))])
    assert r.status_code == 404 and "no-such-model" in r.json()["message"]
    r = stack.http.post(f"/models/{MODEL}/predict", params={"version": 99},
                        files=[("files", ("a.png", good))])  # fmt: skip
    assert r.status_code == 404 and "version 99" in r.json()["message"]
    r = stack.http.post(
        f"/models/{MODEL}/predict", files=[("files", (f"{i}.png", good)) for i in range(65)]
    )
    assert r.status_code == 413
