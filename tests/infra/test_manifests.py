"""The deployment files, checked without Docker or Kubernetes: compose against the Compose
spec, Kubernetes objects against Kubernetes' schemas (kubernetes-validate, offline), KubeRay
objects against tests/infra/schemas/kuberay.json, the Dockerfiles by a small linter, plus
what the platform relies on. Each checker is also run on broken copies: it must catch them.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import infra_checks
from tests.support.infra_checks import DOCKER, INFRA, REPO, load_docs, read_env

KUBERAY = INFRA / "kuberay"
K8S_FILES = sorted(p for p in KUBERAY.glob("*.yaml") if p.name != "kustomization.yaml")


def compose() -> dict[str, Any]:
    return load_docs(INFRA / "compose.yaml")[0]


def k8s_docs(*, examples: bool = True) -> list[dict[str, Any]]:
    docs = [d for p in K8S_FILES for d in load_docs(p)]
    return [d for d in docs if examples or d["kind"] != "Secret"]


def secrets() -> list[dict[str, Any]]:
    return load_docs(KUBERAY / "secrets.example.yaml")


# ---- compose ----------------------------------------------------------------------------------


def test_compose_is_valid_and_safe() -> None:
    assert infra_checks.compose_problems(compose()) == []


def test_compose_runs_the_whole_topology() -> None:
    services = compose()["services"]
    commands = {name: infra_checks._command_words(s) for name, s in services.items()}
    assert services["postgres"]["image"].startswith("postgres:")
    assert {"mlflow", "server"} <= set(commands["mlflow"])
    assert "--head" in commands["ray-head"]
    assert "--address=ray-head:6379" in commands["ray-worker"]
    assert commands["api"][:1] == ["api"] and commands["scheduler"] == ["scheduler"]
    assert commands["dashboard"][:1] == ["dashboard"]
    # the drivers and the nodes find each other through the same environment
    env = read_env(INFRA / "env" / "fovea.env.example")
    assert env["FOVEA_RAY_ADDRESS"] == "ray-head:6379"
    assert env["FOVEA_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["FOVEA_DATABASE_URL"].startswith("postgresql+psycopg://")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            doc = doc[key]
        if value is None:
            del doc[last]
        else:
            doc[last] = value

    return apply


COMPOSE_BREAKAGES = {
    "published on every interface": (
        _set("services.api.ports", ["8742:8742"]),
        "api: port '8742:8742' is published on all interfaces",
    ),
    "published on 0.0.0.0": (
        _set("services.mlflow.ports", ["0.0.0.0:5000:5000"]),
        "mlflow: port '0.0.0.0:5000:5000' is published on 0.0.0.0",
    ),
    "long syntax without host_ip": (
        _set("services.ray-head.ports", [{"target": 8265, "published": "8265"}]),
        "ray-head: port",
    ),
    "no healthcheck": (_set("services.scheduler.healthcheck", None), "scheduler: no healthcheck"),
    "unknown health check kind": (
        _set("services.ray-worker.healthcheck.test", ["CMD", "fovea-healthcheck", "ping", "x"]),
        "ray-worker: fovea-healthcheck arguments",
    ),
    "ray node without the token": (
        _set("services.ray-worker.env_file", ["env/worker.env"]),
        "ray-worker: runs Ray without RAY_AUTH_MODE=token",
    ),
    "Ray node with the control plane's secrets": (
        _set("services.ray-worker.env_file", ["env/fovea.env", "env/ray.env"]),
        "ray-worker: a Ray node gets FOVEA_API_TOKEN",
    ),
    "driver without the token": (
        _set("services.scheduler.env_file", ["env/fovea.env"]),
        "scheduler: runs Ray without RAY_AUTH_MODE=token",
    ),
    "no shm_size": (_set("services.ray-worker.shm_size", None), "ray-worker: a Ray node without"),
    "secret inline": (
        _set("services.dashboard.environment.FOVEA_API_TOKEN", "abc"),
        "dashboard: secret FOVEA_API_TOKEN written in compose.yaml",
    ),
    "env file without example": (
        _set("services.api.env_file", ["env/fovea.env", "env/ray.env", "env/other.env"]),
        "api: env file env/other.env has no env/other.env.example",
    ),
    "misspelt key": (_set("services.ray-head.shm_sise", "2gb"), "schema: services/ray-head"),
    "duration not a string": (
        _set("services.api.healthcheck.interval", 10),
        "schema: services/api/healthcheck/interval",
    ),
    "mlflow without auth": (
        lambda d: d["services"]["mlflow"]["command"].remove("--app-name=basic-auth"),
        "mlflow: started without --app-name basic-auth",
    ),
    "mlflow allows every host": (
        lambda d: d["services"]["mlflow"]["command"].append("--allowed-hosts=*"),
        "mlflow: --allowed-hosts missing or '*'",
    ),
    "worker without the checkpoint volume": (
        _set("services.ray-worker.volumes", ["mlartifacts:/shared/mlartifacts"]),
        "ray-worker: nothing mounted at FOVEA_CHECKPOINT_ROOT=/shared/checkpoints",
    ),
    "checkpoints not shared": (
        _set("services.ray-worker.volumes", ["local-ckpt:/shared/checkpoints"]),
        "checkpoints are on different volumes",
    ),
}


@pytest.mark.parametrize("breakage", list(COMPOSE_BREAKAGES))
def test_compose_checks_catch(breakage: str) -> None:
    change, expected = COMPOSE_BREAKAGES[breakage]
    doc = copy.deepcopy(compose())
    change(doc)
    problems = infra_checks.compose_problems(doc)
    assert any(expected in p for p in problems), problems


# ---- env files --------------------------------------------------------------------------------


def _load_script(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env_examples(folder: Path) -> dict[str, dict[str, str]]:
    return {p.name.split(".")[0]: read_env(p) for p in folder.glob("*.env*") if p.suffix != ".py"}


def assert_env_consistent(env: dict[str, dict[str, str]]) -> None:
    from sqlalchemy.engine import make_url

    pg = env["postgres"]
    for url in (env["fovea"]["FOVEA_DATABASE_URL"], env["mlflow"]["MLFLOW_BACKEND_STORE_URI"]):
        parsed = make_url(url)
        assert (parsed.username, parsed.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert env["dashboard"]["FOVEA_API_TOKEN"] == env["fovea"]["FOVEA_API_TOKEN"]
    assert env["fovea"]["MLFLOW_TRACKING_USERNAME"] == env["mlflow"]["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert env["fovea"]["MLFLOW_TRACKING_PASSWORD"] == env["mlflow"]["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert env["ray"]["RAY_AUTH_MODE"] == "token" and env["ray"]["RAY_AUTH_TOKEN"]
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert env["worker"][key] == env["fovea"][key]


def test_env_examples_agree_with_each_other() -> None:
    assert_env_consistent(_env_examples(INFRA / "env"))


def test_make_env_writes_fresh_consistent_private_files(tmp_path: Path) -> None:
    make_env = _load_script(INFRA / "env" / "make_env.py")
    for example in (INFRA / "env").glob("*.env.example"):
        shutil.copy(example, tmp_path)
    assert make_env.main(["--dir", str(tmp_path)]) == 0
    written = sorted(tmp_path.glob("*.env"))
    assert [p.name for p in written] == sorted(
        p.name.removesuffix(".example") for p in (INFRA / "env").glob("*.env.example")
    )
    for path in written:
        assert "change-me" not in path.read_text()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    env = {p.name.removesuffix(".env"): read_env(p) for p in written}
    assert_env_consistent(env)
    assert len(env["ray"]["RAY_AUTH_TOKEN"]) == 64
    assert env["ray"]["RAY_AUTH_TOKEN"] != env["fovea"]["FOVEA_API_TOKEN"]
    before = (tmp_path / "ray.env").read_text()
    assert make_env.main(["--dir", str(tmp_path)]) == 1  # never overwrites silently
    assert (tmp_path / "ray.env").read_text() == before
    assert make_env.main(["--dir", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "ray.env").read_text() != before


def test_real_env_files_are_ignored_by_git() -> None:
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "infra/env/*.env" in ignored and "infra/kuberay/secrets.yaml" in ignored


# ---- Kubernetes and KubeRay -------------------------------------------------------------------


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
def test_kubernetes_objects_match_their_schemas(path: Path) -> None:
    problems = [p for d in load_docs(path) for p in infra_checks.schema_problems(d, path.name)]
    assert problems == []


def test_kubernetes_manifests_are_safe() -> None:
    assert infra_checks.kubernetes_problems(k8s_docs(examples=False), secrets()) == []


def test_kustomization_lists_every_manifest_but_the_examples() -> None:
    kustomization = load_docs(KUBERAY / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    examples = {p.name for p in K8S_FILES if "example" in p.name or p.name.startswith("rayjob")}
    assert listed == {p.name for p in K8S_FILES} - examples
    assert examples == {"secrets.example.yaml", "rayjob-cluster-check.yaml"}


def test_the_rayjob_runs_the_script_it_mounts() -> None:
    config, job = load_docs(KUBERAY / "rayjob-cluster-check.yaml")
    script = config["data"]["cluster_check.py"]
    compile(script, "cluster_check.py", "exec")  # a syntax error fails here, not on a cluster
    mount = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "volumeMounts"
    ][0]["mountPath"]
    assert job["spec"]["entrypoint"] == f"python {mount}/cluster_check.py"


def _first(kind: str, name: str | None = None) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    def pick(docs: list[dict[str, Any]]) -> dict[str, Any]:
        return next(d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"]))

    return pick


def _worker(docs: list[dict[str, Any]], group: str = "gpu") -> dict[str, Any]:
    cluster = _first("RayCluster")(docs)
    return next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == group)


K8S_BREAKAGES: dict[str, tuple[Callable[[list[dict[str, Any]]], None], str]] = {
    "token auth off": (
        lambda ds: _first("RayCluster")(ds)["spec"]["authOptions"].update(mode="disabled"),
        "RayCluster fovea: Ray token auth off",
    ),
    "token auth removed from the RayJob's cluster": (
        lambda ds: _first("RayJob")(ds)["spec"]["rayClusterSpec"].pop("authOptions"),
        "RayJob fovea-cluster-check: Ray token auth off",
    ),
    "a token secret that is not defined": (
        lambda ds: _first("RayCluster")(ds)["spec"]["authOptions"].update(secretName="nope"),
        "its Secret is not defined",
    ),
    "Ray workers with the control plane's secrets": (
        lambda ds: _worker(ds)["template"]["spec"]["containers"][0]["envFrom"].append(
            {"secretRef": {"name": "fovea-secrets"}}
        ),
        "worker group gpu: a Ray pod gets Secret fovea-secrets",
    ),
    "scheduler without the token": (
        lambda ds: _first("Deployment", "fovea-scheduler")(ds)["spec"]["template"]["spec"][
            "containers"
        ][0].pop("env"),
        "Deployment fovea-scheduler: a Ray driver without",
    ),
    "public Service": (
        lambda ds: _first("Service", "fovea-api")(ds)["spec"].update(type="LoadBalancer"),
        "Service fovea-api: type LoadBalancer",
    ),
    "public Ray head": (
        lambda ds: _first("RayCluster")(ds)["spec"]["headGroupSpec"].update(serviceType="NodePort"),
        "the Ray head Service is exposed",
    ),
    "no probes": (
        lambda ds: _first("Deployment", "fovea-dashboard")(ds)["spec"]["template"]["spec"][
            "containers"
        ][0].pop("livenessProbe"),
        "Deployment fovea-dashboard: container dashboard lacks",
    ),
    "root pod": (
        lambda ds: _first("Deployment", "fovea-api")(ds)["spec"]["template"]["spec"][
            "securityContext"
        ].pop("runAsNonRoot"),
        "container api may run as root",
    ),
    "checkpoints on node-local storage": (
        lambda ds: _first("PersistentVolumeClaim", "fovea-checkpoints")(ds)["spec"].update(
            accessModes=["ReadWriteOnce"]
        ),
        "checkpoint claim fovea-checkpoints is not ReadWriteMany",
    ),
    "GPU workers without the checkpoint volume": (
        lambda ds: _worker(ds)["template"]["spec"]["containers"][0].update(volumeMounts=[]),
        "worker group gpu: no PersistentVolumeClaim mounted at /shared/checkpoints",
    ),
    "mixed image versions": (
        lambda ds: _worker(ds)["template"]["spec"]["containers"][0].update(
            image="fovea:0.2.0-cuda"
        ),
        "fovea images of different versions",
    ),
    "rayVersion not the image's": (
        lambda ds: _first("RayCluster")(ds)["spec"].update(rayVersion="2.41.0"),
        "rayVersion 2.41.0 but the images install ray==",
    ),
}


@pytest.mark.parametrize("breakage", list(K8S_BREAKAGES))
def test_kubernetes_checks_catch(breakage: str) -> None:
    change, expected = K8S_BREAKAGES[breakage]
    docs = copy.deepcopy(k8s_docs(examples=False))
    change(docs)
    problems = infra_checks.kubernetes_problems(docs, secrets())
    assert any(expected in p for p in problems), problems


SCHEMA_BREAKAGES: dict[str, tuple[Callable[[list[dict[str, Any]]], dict[str, Any]], str]] = {
    "misspelt RayCluster field": (
        lambda ds: _worker(ds).update(maxReplica=4) or _first("RayCluster")(ds),
        "schema: spec/workerGroupSpecs/1: Additional properties",
    ),
    "worker group without maxReplicas": (
        lambda ds: _worker(ds).pop("maxReplicas") and _first("RayCluster")(ds),
        "'maxReplicas' is a required property",
    ),
    "unknown auth mode": (
        lambda ds: (
            _first("RayCluster")(ds)["spec"]["authOptions"].update(mode="tokens")
            or _first("RayCluster")(ds)
        ),
        "spec/authOptions/mode: 'tokens' is not one of",
    ),
    "rayStartParams value not a string": (
        lambda ds: (
            _first("RayCluster")(ds)["spec"]["headGroupSpec"]["rayStartParams"].update(
                {"num-cpus": 0}
            )
            or _first("RayCluster")(ds)
        ),
        "spec/headGroupSpec/rayStartParams/num-cpus: 0 is not of type 'string'",
    ),
    "RayJob with both a cluster and a selector": (
        lambda ds: (
            _first("RayJob")(ds)["spec"].update(clusterSelector={"ray.io/cluster": "x"})
            or _first("RayJob")(ds)
        ),
        "is valid under each of",
    ),
    "bad pod template inside a RayCluster": (
        lambda ds: (
            _worker(ds)["template"]["spec"]["containers"][0].update(imagePullPolicy=1)
            or _first("RayCluster")(ds)
        ),
        "(RayCluster fovea worker group gpu): kubernetes:",
    ),
    "misspelt Deployment field": (
        lambda ds: (
            _first("Deployment", "fovea-api")(ds)["spec"].update(replica=2)
            or _first("Deployment", "fovea-api")(ds)
        ),
        "kubernetes: spec: Additional properties are not allowed ('replica' was unexpected)",
    ),
    "PVC with a bad size": (
        lambda ds: (
            _first("PersistentVolumeClaim")(ds)["spec"]["resources"].update(
                requests={"storage": ["200Gi"]}
            )
            or _first("PersistentVolumeClaim")(ds)
        ),
        "kubernetes: spec/resources/requests/storage",
    ),
}


@pytest.mark.parametrize("breakage", list(SCHEMA_BREAKAGES))
def test_schema_checks_catch(breakage: str) -> None:
    change, expected = SCHEMA_BREAKAGES[breakage]
    docs = copy.deepcopy(k8s_docs())
    broken = change(docs)
    problems = infra_checks.schema_problems(broken, "broken")
    assert any(expected in p for p in problems), problems


# ---- Dockerfiles ------------------------------------------------------------------------------

DOCKERFILES = {"Dockerfile.cpu": "cpu", "Dockerfile.cuda": "cu130"}


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_dockerfile_passes_the_linter(name: str) -> None:
    text = (DOCKER / name).read_text()
    assert infra_checks.dockerfile_problems(text, torch_index=DOCKERFILES[name]) == []


def test_images_pin_what_pyproject_admits() -> None:
    pins = infra_checks.constraints()
    reqs = infra_checks.project_requirements()
    for package in ("torch", "torchvision", "ray", "mlflow"):
        assert reqs[package].specifier.contains(pins[package]), (package, pins[package])
    assert (pins["torch"], pins["torchvision"]) == ("2.14.1", "0.29.1")


DOCKERFILE_BREAKAGES = {
    "runs as root": ("USER 10001:10001", "USER root", "final stage runs as USER root"),
    "no USER": ("USER 10001:10001\n", "", "final stage has no USER"),
    "single stage": (
        "FROM ${PYTHON_IMAGE} AS runtime",
        "",
        "not multi-stage",
    ),
    "unpinned base": (
        "ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm",
        "ARG PYTHON_IMAGE=python:latest",
        "base image not pinned",
    ),
    "torch outside pyproject's range": (
        "ARG TORCH_VERSION=2.14.1",
        "ARG TORCH_VERSION=2.15.0",
        "torch==2.15.0 is outside pyproject's",
    ),
    "torch unpinned": (
        '"torch==${TORCH_VERSION}"',
        '"torch>=2.4"',
        "is not pinned with ==",
    ),
    "a secret in ENV": (
        "    RAY_USAGE_STATS_ENABLED=0",
        "    RAY_USAGE_STATS_ENABLED=0 \\\n    FOVEA_API_TOKEN=abc123",
        "ENV FOVEA_API_TOKEN: a secret baked into the image",
    ),
    "the env files copied": (
        "COPY fovea /src/fovea",
        "COPY fovea /src/fovea\nCOPY infra/env/fovea.env /etc/fovea.env",
        "would copy secrets",
    ),
    "curl into a shell": (
        "RUN python -m venv /opt/fovea",
        "RUN curl -sSL https://example.com/x.sh | sh && python -m venv /opt/fovea",
        "pipes a download into a shell",
    ),
    "apt leftovers": (
        "    && rm -rf /var/lib/apt/lists/*",
        "",
        "leaves the package lists",
    ),
    "CUDA wheels in the CPU image": (
        "whl/cpu",
        "whl/cu130",
        "not the cpu wheel index",
    ),
    "another entry point": (
        '"fovea"]',
        '"python"]',
        "ENTRYPOINT is not the fovea command",
    ),
}


@pytest.mark.parametrize("breakage", list(DOCKERFILE_BREAKAGES))
def test_dockerfile_linter_catches(breakage: str) -> None:
    old, new, expected = DOCKERFILE_BREAKAGES[breakage]
    text = (DOCKER / "Dockerfile.cpu").read_text()
    assert old in text, f"the breakage {breakage!r} no longer applies to Dockerfile.cpu"
    problems = infra_checks.dockerfile_problems(text.replace(old, new), torch_index="cpu")
    assert any(expected in p for p in problems), problems


def test_dockerignore_keeps_secrets_out_and_lets_the_copies_in() -> None:
    ignore = (REPO / ".dockerignore").read_text()
    files = [(DOCKER / name).read_text() for name in DOCKERFILES]
    assert infra_checks.dockerignore_problems(ignore, files) == []
    assert infra_checks.dockerignore_problems(
        ignore.replace("!docker/healthcheck.py\n", ""), files
    ) == ["COPY docker/healthcheck.py: excluded by .dockerignore"]
    assert infra_checks.dockerignore_problems(ignore.replace("*\n", "", 1), files)
