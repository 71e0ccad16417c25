"""Checkers for the deployment files: each returns a list of problems (empty: fine).

Schemas come from tests/infra/schemas (the Compose spec, KubeRay's fields) and from
kubernetes-validate's bundled OpenAPI schemas, so nothing here needs a network, a Docker
engine or a cluster. The tests run them on the real files and on broken copies.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
DOCKER = REPO / "docker"
SCHEMAS = REPO / "tests" / "infra" / "schemas"

# Secrets only the control plane needs; a Ray node (which runs the jobs) gets none of them.
CONTROL_PLANE_SECRETS = {"FOVEA_DATABASE_URL", "FOVEA_API_TOKEN", "POSTGRES_PASSWORD"}
CONTROL_PLANE_SECRET = "fovea-secrets"  # the Kubernetes Secret with them
LOOPBACK = {"127.0.0.1", "::1", "[::1]", "localhost"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY", re.I)


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if sep:
                pairs[key.strip()] = value.strip()
    return pairs


def constraints() -> dict[str, str]:
    """docker/constraints.txt as {name: version}; every line must be `name==version`."""
    pins = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            pins[name.strip().lower()] = version.strip() if sep else ""
    return pins


def project_requirements() -> dict[str, Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in data["project"]["dependencies"]]
    return {r.name.lower(): r for r in reqs}


def _schema_errors(validator: jsonschema.protocols.Validator, doc: Any, where: str) -> list[str]:
    return [
        f"{where}: schema: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]


# ---- compose ----------------------------------------------------------------------------------


@cache
def _compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    return jsonschema.Draft7Validator(schema)


def _published_host_ip(port: str | int | dict[str, Any]) -> str | None:
    """The host address a `ports:` entry binds; None when it binds every interface."""
    if isinstance(port, dict):
        return port.get("host_ip")
    text = str(port)
    if text.startswith("["):  # [::1]:8080:80
        host, _, _ = text[1:].partition("]")
        return host
    parts = text.split(":")
    return parts[0] if len(parts) == 3 else None


def _command_words(service: dict[str, Any]) -> list[str]:
    words = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        words += shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
    return words


def _runs_ray(service: dict[str, Any]) -> bool:
    """A Ray node (`ray start`) or a Ray driver (`fovea api`, `fovea scheduler`)."""
    words = _command_words(service)
    return ("start" in words and "ray" in words) or bool({"api", "scheduler"} & set(words[:1]))


def _healthcheck_problems(name: str, service: dict[str, Any]) -> list[str]:
    check = service.get("healthcheck") or {}
    test = check.get("test")
    if not test or check.get("disable") or test == ["NONE"]:
        return [f"{name}: no healthcheck"]
    if isinstance(test, list) and "fovea-healthcheck" in test:
        args = test[test.index("fovea-healthcheck") + 1 :]
        kinds = args[::2]
        if not args or len(args) % 2 or set(kinds) - {"http", "tcp", "process"}:
            return [f"{name}: fovea-healthcheck arguments {args} are not (kind, value) pairs"]
    return []


def _service_problems(name: str, service: dict[str, Any], env_dir: Path) -> list[str]:
    problems = _healthcheck_problems(name, service)
    for port in service.get("ports", []):
        host = _published_host_ip(port)
        if host is None:
            problems.append(f"{name}: port {port!r} is published on all interfaces")
        elif host not in LOOPBACK:
            problems.append(f"{name}: port {port!r} is published on {host}, not loopback")
    env = service.get("environment") or {}
    items = env.items() if isinstance(env, dict) else (e.partition("=")[::2] for e in env)
    problems += [
        f"{name}: secret {key} written in compose.yaml (use an env file)"
        for key, value in items
        if SECRET_NAME.search(key) and value
    ]
    env_files = [f if isinstance(f, str) else f["path"] for f in service.get("env_file", [])]
    for env_file in env_files:
        if not (env_dir.parent / f"{env_file}.example").is_file():
            problems.append(f"{name}: env file {env_file} has no {env_file}.example")
    merged: dict[str, str] = {}
    for env_file in env_files:
        example = env_dir.parent / f"{env_file}.example"
        if example.is_file():
            merged |= read_env(example)
    if _runs_ray(service) and (
        merged.get("RAY_AUTH_MODE") != "token" or not merged.get("RAY_AUTH_TOKEN")
    ):
        problems.append(f"{name}: runs Ray without RAY_AUTH_MODE=token and RAY_AUTH_TOKEN")
    if "start" in _command_words(service):
        problems += [
            f"{name}: a Ray node gets {key} (training jobs need none of the control plane's)"
            for key in sorted(CONTROL_PLANE_SECRETS & set(merged))
        ]
    if "start" in _command_words(service) and not service.get("shm_size"):
        problems.append(f"{name}: a Ray node without shm_size (Docker's /dev/shm is 64 MB)")
    return problems


def _mlflow_problems(services: dict[str, Any]) -> list[str]:
    server = [s for s in services.values() if {"mlflow", "server"} <= set(_command_words(s))]
    if not server:
        return ["no MLflow server service"]
    words = _command_words(server[0])
    problems = []
    if "--app-name=basic-auth" not in words and "basic-auth" not in words:
        problems.append("mlflow: started without --app-name basic-auth")
    hosts = [w.split("=", 1)[1] for w in words if w.startswith("--allowed-hosts=")]
    if not hosts or any("*" in h.split(",") for h in hosts):
        problems.append("mlflow: --allowed-hosts missing or '*'")
    return problems


def _checkpoint_problems(services: dict[str, Any], env_dir: Path) -> list[str]:
    root = read_env(env_dir / "fovea.env.example").get("FOVEA_CHECKPOINT_ROOT")
    if not root:
        return ["fovea.env.example: no FOVEA_CHECKPOINT_ROOT"]
    problems, volumes = [], set()
    for name, service in services.items():
        if not ("start" in _command_words(service) or "scheduler" in _command_words(service)):
            continue
        mounts = [str(v).split(":") for v in service.get("volumes", [])]
        found = [m[0] for m in mounts if len(m) >= 2 and m[1] == root]
        if not found:
            problems.append(f"{name}: nothing mounted at FOVEA_CHECKPOINT_ROOT={root}")
        volumes.update(found)
    if len(volumes) > 1:
        problems.append(f"checkpoints are on different volumes {sorted(volumes)}: not shared")
    return problems


def compose_problems(doc: dict[str, Any], *, env_dir: Path = INFRA / "env") -> list[str]:
    problems = _schema_errors(_compose_validator(), doc, "compose.yaml")
    services = doc.get("services") or {}
    for name, service in services.items():
        problems += _service_problems(name, service, env_dir)
    return problems + _mlflow_problems(services) + _checkpoint_problems(services, env_dir)


# ---- Kubernetes and KubeRay -------------------------------------------------------------------


@cache
def _kuberay_validator(kind: str) -> jsonschema.Draft202012Validator:
    """The schema of one KubeRay kind (errors then name the field, not the whole object)."""
    defs = json.loads((SCHEMAS / "kuberay.json").read_text())["$defs"]
    if kind not in defs:
        kind = "RayCluster"  # the kind check itself reports the mismatch
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{kind}", "$defs": defs})


def _k8s_errors(doc: dict[str, Any], where: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(map(str, exc.path))
        return [f"{where}: kubernetes: {path}: {exc.message}"]
    return []


def ray_cluster_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if doc.get("kind") == "RayCluster":
        yield doc.get("spec") or {}
    elif doc.get("kind") == "RayJob" and "rayClusterSpec" in (doc.get("spec") or {}):
        yield doc["spec"]["rayClusterSpec"]


def ray_pod_templates(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "head", spec.get("headGroupSpec", {}).get("template") or {}
    for group in spec.get("workerGroupSpecs") or []:
        yield f"worker group {group.get('groupName')}", group.get("template") or {}


def pod_templates(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod template in a Deployment, RayCluster or RayJob."""
    name = f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"
    if doc.get("kind") == "Deployment":
        yield name, doc["spec"]["template"]
    for spec in ray_cluster_specs(doc):
        for group, template in ray_pod_templates(spec):
            yield f"{name} {group}", template
    if doc.get("kind") == "RayJob" and "submitterPodTemplate" in doc.get("spec", {}):
        yield f"{name} submitter", doc["spec"]["submitterPodTemplate"]


def schema_problems(doc: dict[str, Any], where: str) -> list[str]:
    """KubeRay objects against kuberay.json, their pod templates as v1/PodTemplate objects;
    everything else against Kubernetes' own schemas."""
    if not str(doc.get("apiVersion", "")).startswith("ray.io/"):
        return _k8s_errors(doc, where)
    problems = _schema_errors(_kuberay_validator(str(doc.get("kind"))), doc, where)
    for name, template in pod_templates(doc):
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "check"},
            "template": template,
        }
        problems += _k8s_errors(wrapped, f"{where} ({name})")
    return problems


def _pod_security_problems(name: str, pod: dict[str, Any]) -> list[str]:
    problems = []
    pod_ctx = pod.get("securityContext") or {}
    for c in pod.get("containers", []):
        ctx = c.get("securityContext") or {}
        if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
            problems.append(f"{name}: container {c.get('name')} may run as root")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: container {c.get('name')} allows privilege escalation")
    return problems


def _ray_pod_secret_problems(name: str, pod: dict[str, Any]) -> list[str]:
    """Ray pods run the jobs: no Secret holding the control plane's credentials."""
    problems = []
    for c in pod.get("containers", []):
        refs = {e.get("secretRef", {}).get("name") for e in c.get("envFrom", [])}
        refs |= {
            e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") for e in c.get("env", [])
        }
        if CONTROL_PLANE_SECRET in refs:
            problems.append(f"{name}: a Ray pod gets Secret {CONTROL_PLANE_SECRET}")
    return problems


def _driver_token_problems(doc: dict[str, Any], secret: str) -> list[str]:
    """api and scheduler Deployments are Ray drivers: they need the cluster's token."""
    problems = []
    for c in doc["spec"]["template"]["spec"]["containers"]:
        if not {"api", "scheduler"} & set(c.get("args", [])[:1]):
            continue
        env = {e["name"]: e for e in c.get("env", [])}
        ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
        if env.get("RAY_AUTH_MODE", {}).get("value") != "token" or ref != {
            "name": secret,
            "key": "auth_token",
        }:
            problems.append(
                f"Deployment {doc['metadata']['name']}: a Ray driver without "
                f"RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from Secret {secret}/auth_token"
            )
    return problems


def _checkpoint_mount_problems(docs: list[dict[str, Any]]) -> list[str]:
    config = next(
        (d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "fovea-config"),
        None,
    )
    root = (config or {}).get("data", {}).get("FOVEA_CHECKPOINT_ROOT")
    if not root:
        return ["ConfigMap fovea-config: no FOVEA_CHECKPOINT_ROOT"]
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    problems = []
    trainers = [(n, t) for d in docs for n, t in pod_templates(d) if "worker group" in n]
    trainers += [
        (f"Deployment {d['metadata']['name']}", d["spec"]["template"])
        for d in docs
        if d["kind"] == "Deployment"
        and any(
            c.get("args", [])[:1] == ["scheduler"]
            for c in d["spec"]["template"]["spec"]["containers"]
        )
    ]
    for name, template in trainers:
        spec = template.get("spec", {})
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec.get("containers", []):
            mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == root), None)
            claim_name = (
                volumes.get(mount["name"], {}).get("persistentVolumeClaim", {}).get("claimName")
                if mount
                else None
            )
            claim = claims.get(claim_name or "")
            if claim is None:
                problems.append(f"{name}: no PersistentVolumeClaim mounted at {root}")
            elif "ReadWriteMany" not in claim["spec"].get("accessModes", []):
                problems.append(f"{name}: checkpoint claim {claim_name} is not ReadWriteMany")
    return problems


def _image_problems(docs: list[dict[str, Any]]) -> list[str]:
    """One fovea version on every Ray node and driver; rayVersion is the image's ray."""
    problems, versions = [], set()
    for doc in docs:
        for name, template in pod_templates(doc):
            for c in template.get("spec", {}).get("containers", []):
                tag = c.get("image", "").rpartition(":")[2]
                if not re.fullmatch(r"\d+\.\d+\.\d+-(cpu|cuda)", tag):
                    problems.append(
                        f"{name}: image {c.get('image')!r} is not a versioned fovea tag"
                    )
                versions.add(tag.rsplit("-", 1)[0])
        for spec in ray_cluster_specs(doc):
            if spec.get("rayVersion") != constraints().get("ray"):
                problems.append(
                    f"{doc['kind']} {doc['metadata']['name']}: rayVersion {spec.get('rayVersion')}"
                    f" but the images install ray=={constraints().get('ray')}"
                )
    if len(versions) > 1:
        problems.append(f"fovea images of different versions: {sorted(versions)}")
    return problems


def _ray_auth_problems(doc: dict[str, Any], token_secrets: set[str]) -> list[str]:
    problems = []
    name = f"{doc['kind']} {doc['metadata']['name']}"
    for spec in ray_cluster_specs(doc):
        auth = spec.get("authOptions") or {}
        if auth.get("mode") != "token" or auth.get("secretName") not in token_secrets:
            problems.append(f"{name}: Ray token auth off or its Secret is not defined")
        if spec.get("headGroupSpec", {}).get("serviceType", "ClusterIP") != "ClusterIP":
            problems.append(f"{name}: the Ray head Service is exposed outside the cluster")
    return problems


def _deployment_probe_problems(doc: dict[str, Any]) -> list[str]:
    if doc["kind"] != "Deployment":
        return []
    return [
        f"Deployment {doc['metadata']['name']}: container {c['name']} lacks a readiness "
        "or liveness probe"
        for c in doc["spec"]["template"]["spec"]["containers"]
        if not (c.get("readinessProbe") and c.get("livenessProbe"))
    ]


def kubernetes_problems(docs: list[dict[str, Any]], secrets: list[dict[str, Any]]) -> list[str]:
    """What the platform relies on, across every manifest: no public Service, probes,
    non-root pods, Ray token auth on every cluster and driver, shared checkpoints."""
    problems: list[str] = []
    token_secrets = {
        s["metadata"]["name"] for s in secrets if "auth_token" in s.get("stringData", {})
    }
    clusters = [d for d in docs if d["kind"] == "RayCluster"]
    secret = (clusters[0]["spec"].get("authOptions") or {}).get("secretName") if clusters else None
    for doc in docs:
        name = f"{doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] == "Service" and doc["spec"].get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"{name}: type {doc['spec']['type']} exposes it outside the cluster")
        problems += _ray_auth_problems(doc, token_secrets)
        for pod_name, template in pod_templates(doc):
            problems += _pod_security_problems(pod_name, template.get("spec", {}))
            if doc["kind"] != "Deployment" and "submitter" not in pod_name:
                problems += _ray_pod_secret_problems(pod_name, template.get("spec", {}))
        problems += _deployment_probe_problems(doc)
        if doc["kind"] == "Deployment":
            problems += _driver_token_problems(doc, secret or "fovea-ray-token")
    return problems + _checkpoint_mount_problems(docs) + _image_problems(docs)


# ---- Dockerfiles ------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def _arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            defaults[key.strip()] = value.strip().strip('"')
    return defaults


def _expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m[1] or m[2], m[0]), text)


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in instructions:
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    return stages


def _from_problems(stages: list[list[tuple[str, str]]], values: dict[str, str]) -> list[str]:
    problems = []
    if len(stages) < 2:
        problems.append("not multi-stage: build tools and caches would ship in the image")
    names = set()
    for stage in stages:
        words = _expand(stage[0][1], values).split()
        image = words[0]
        if image in names:
            continue
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        if "@sha256:" not in image and (not tag or tag == "latest" or not re.search(r"\d", tag)):
            problems.append(f"FROM {image}: base image not pinned to a version")
        if len(words) >= 3 and words[1].upper() == "AS":
            names.add(words[2])
    final = stages[-1] if stages else []
    users = [rest for word, rest in final if word == "USER"]
    if not users:
        problems.append("final stage has no USER: the container would run as root")
    elif users[-1].split(":")[0] in {"root", "0"}:
        problems.append(f"final stage runs as USER {users[-1]}")
    if not any(w == "COPY" and "--from=" in rest for w, rest in final):
        problems.append("final stage copies nothing from a build stage")
    return problems


def _pip_install_targets(run: str) -> list[str]:
    """What the `pip install` commands of a RUN line install (options and their values out)."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append([])
        else:
            commands[-1].append(token)
    targets = []
    for words in commands:
        if words[:2] != ["pip", "install"] and words[1:3] != ["-m", "pip"]:
            continue
        rest = words[words.index("install") + 1 :]
        skip = False
        for word in rest:
            if skip:
                skip = False
            elif word.startswith("-"):
                skip = "=" not in word and word in {
                    "--index-url",
                    "-i",
                    "--extra-index-url",
                    "-c",
                    "--constraint",
                    "-r",
                    "--requirement",
                    "-f",
                    "--find-links",
                }
            else:
                targets.append(word)
    return targets


def _pin_problems(instructions: list[tuple[str, str]], values: dict[str, str]) -> list[str]:
    problems = []
    reqs, pins = project_requirements(), constraints()
    for package, arg in (("torch", "TORCH_VERSION"), ("torchvision", "TORCHVISION_VERSION")):
        version = values.get(arg)
        if not version:
            problems.append(f"no ARG {arg} pinning {package}")
            continue
        if not reqs[package].specifier.contains(version, prereleases=True):
            problems.append(f"{package}=={version} is outside pyproject's {reqs[package]}")
        if pins.get(package) != version:
            problems.append(
                f"{package}=={version} but docker/constraints.txt has {pins.get(package)}"
            )
    unpinned = [n for n, v in pins.items() if not re.fullmatch(r"[\w.+-]+", v)]
    problems += [f"docker/constraints.txt: {n} is not pinned with ==" for n in unpinned]
    constrained = any(w == "ENV" and "PIP_CONSTRAINT=" in rest for w, rest in instructions)
    for word, rest in instructions:
        if word != "RUN" or "pip install" not in rest:
            continue
        for text in _pip_install_targets(rest):
            text = _expand(text, values)
            if re.match(r"torch(vision)?\b", text) and not re.fullmatch(
                r"torch(vision)?==[\w.+]+", text
            ):
                problems.append(f"pip install {text!r}: torch is not pinned with ==")
        if not constrained:
            problems.append("pip installs without PIP_CONSTRAINT=docker/constraints.txt")
    return problems


def _secret_problems(instructions: list[tuple[str, str]]) -> list[str]:
    problems = []
    for word, rest in instructions:
        if word in {"ENV", "ARG"}:
            for key, value in re.findall(r"([A-Za-z_][\w]*)=(\"[^\"]*\"|\S+)", rest):
                if SECRET_NAME.search(key) and value.strip('"'):
                    problems.append(f"{word} {key}: a secret baked into the image")
        if word in {"COPY", "ADD"}:
            sources = [s for s in rest.split()[:-1] if not s.startswith("--")]
            for src in sources:
                if src.endswith(".env") or "/env/" in src or src in {".", ".git"}:
                    problems.append(f"{word} {src}: would copy secrets or the whole context")
                if word == "ADD" and re.match(r"https?://", src):
                    problems.append(f"ADD {src}: downloads without a checksum")
        if word == "RUN" and re.search(r"(curl|wget)[^|]*\|\s*(ba)?sh", rest):
            problems.append("RUN pipes a download into a shell")
    return problems


def _apt_problems(instructions: list[tuple[str, str]]) -> list[str]:
    problems = []
    for word, rest in instructions:
        if word == "RUN" and "apt-get install" in rest:
            if "--no-install-recommends" not in rest:
                problems.append("apt-get install without --no-install-recommends")
            if "rm -rf /var/lib/apt/lists" not in rest:
                problems.append("apt-get install leaves the package lists in the layer")
    return problems


def dockerfile_problems(text: str, *, torch_index: str) -> list[str]:
    """A small linter: multi-stage, pinned bases and torch, non-root, no secrets, fovea's
    entry point, and the torch wheel index the image is for (`cpu` or `cu...`)."""
    instructions = dockerfile_instructions(text)
    values = _arg_defaults(instructions)
    problems = _from_problems(_stages(instructions), values)
    problems += _pin_problems(instructions, values)
    problems += _secret_problems(instructions)
    problems += _apt_problems(instructions)
    index = values.get("TORCH_INDEX_URL", "")
    if not re.search(rf"/whl/{torch_index}\b", index):
        problems.append(f"torch comes from {index or 'PyPI'}, not the {torch_index} wheel index")
    entry = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    if not entry or "fovea" not in json.loads(entry[-1]):
        problems.append("ENTRYPOINT is not the fovea command")
    return problems


def dockerignore_problems(ignore: str, dockerfiles: list[str]) -> list[str]:
    """Everything is ignored but an allowlist, and each COPY source is on it."""
    lines = [x.strip() for x in ignore.splitlines() if x.strip() and not x.startswith("#")]
    if not lines or lines[0] != "*":
        return [".dockerignore does not start by ignoring everything ('*')"]
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    problems = []
    for text in dockerfiles:
        for word, rest in dockerfile_instructions(text):
            if word != "COPY" or "--from=" in rest:
                continue
            for src in rest.split()[:-1]:
                if src.rstrip("/") not in allowed:
                    problems.append(f"COPY {src}: excluded by .dockerignore")
    problems += [f".dockerignore lets {a} in" for a in allowed if "env" in a.split("/")]
    return list(dict.fromkeys(problems))
