"""Model replicas on Ray: registered model versions loaded once, reused for every request.

One named actor per (model, version): `fovea-serve-<name>-v<version>`. Any API process
finds it by name (get_if_exists), so several API processes share a replica, and a restart
of the API finds it still loaded. The API resolves an alias to a version on each request;
when the alias moves, requests go to the new version's replica and the old one is stopped
(`ServingPool.retire`), so serving reloads without a restart.

A replica decodes the request's image bytes (defensively: the pixel limit, EXIF, every mode
to RGB; a bad image is reported by name and never fails the others), predicts and profiles
every image in one forward pass (fovea/tasks/profile.py: the same code as the training-end
reference), and returns per image the response (the pyfunc model's output) and the log
row (statistics, summary, embedding projected on the reference's components).

The API process stays torch-free: torch is imported inside the actor only.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from fovea import priority

log = logging.getLogger(__name__)

ACTOR_PREFIX = "fovea-serve-"
NAMESPACE = "fovea"


@dataclass(frozen=True)
class ImageInput:
    name: str  # the file name the client gave (for messages and the log)
    data: bytes | None = None  # the image bytes, or
    path: str | None = None  # a file the replica reads (batch scoring; roots checked)


@ray.remote
class ModelReplica:
    """One registered model version, loaded on a Ray worker."""

    def __init__(
        self, *, tracking_uri: str, name: str, version: int, threads: int, max_pixels: int
    ) -> None:
        from safetensors.torch import load_file

        from fovea.tasks import get_task
        from fovea.tasks.reference import Reference
        from fovea.tracking.registry import download_weights
        from fovea.tracking.versions import download_reference, resolve_version

        priority.serving_process()  # predictions are work: not in the local Ray's batch class
        self.threads = max(1, threads)
        self.name, self.version, self.max_pixels = name, version, max_pixels
        with tempfile.TemporaryDirectory(prefix="fovea-serve-") as tmp:
            weights, self.card = download_weights(
                tracking_uri=tracking_uri, uri=f"models:/{name}/{version}", dst=Path(tmp)
            )
            state = load_file(str(weights))
        self.task = get_task(self.card["task"])
        self.model = self.task.load_for_inference(self.card, state)
        resolved = resolve_version(tracking_uri=tracking_uri, name=name, version=version)
        data = download_reference(tracking_uri=tracking_uri, run_id=resolved.run_id)
        self.reference = Reference.from_npz(data) if data is not None else None
        self.lock = threading.Lock()  # one forward at a time; requests queue here

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "task": self.card["task"],
            "class_names": self.card["class_names"],
            "has_reference": self.reference is not None,
            "embedding_dim": len(self.reference.pca_components) if self.reference else 0,
        }

    def predict(self, images: Sequence[ImageInput], *, masks: bool = False) -> list[dict[str, Any]]:
        """Per image, in order: {"file", "ok": True, "response", "log"} or {"file", "ok":
        False, "error"}."""
        from fovea.tasks.profile import profile_image_list

        decoded: list[tuple[int, np.ndarray, str]] = []
        results: list[dict[str, Any]] = [{"file": image.name} for image in images]
        for position, image in enumerate(images):
            try:
                pixels, digest = self._decode(image)
            except ValueError as exc:
                results[position].update(ok=False, error=str(exc))
                continue
            decoded.append((position, pixels, digest))
        if decoded:
            import torch

            with self.lock:
                # OpenMP's thread count is per thread, and Ray runs actor methods on threads
                # of its own with OMP_NUM_THREADS=1: set it where the forward runs
                torch.set_num_threads(self.threads)
                profile = profile_image_list(
                    self.task, self.model, self.card, [pixels for _, pixels, _ in decoded]
                )
            for k, (position, _, digest) in enumerate(decoded):
                results[position].update(
                    ok=True,
                    response=image_response(
                        self.card, profile.outputs[k], profile.summary[k], masks=masks
                    ),
                    log=self._log_row(profile, k, digest),
                )
        return results

    def _decode(self, image: ImageInput) -> tuple[np.ndarray, str]:
        from fovea.tasks.data.images import CorruptImageError, ImageTooLargeError, open_image

        if image.data is not None:
            data = image.data
        else:
            assert image.path is not None
            try:
                data = Path(image.path).read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read {image.path}: {exc}") from None
        if not data:
            raise ValueError(f"{image.name}: empty file")
        try:
            picture = open_image(io.BytesIO(data), max_pixels=self.max_pixels)
        except (CorruptImageError, ImageTooLargeError) as exc:
            raise ValueError(f"{image.name}: {exc.reason}") from None
        return np.asarray(picture, dtype=np.uint8), hashlib.sha256(data).hexdigest()

    def _log_row(self, profile: Any, k: int, digest: str) -> dict[str, Any]:
        embedding = b""
        if self.reference is not None:
            projected = self.reference.project(profile.embeddings[k : k + 1])[0]
            embedding = projected.astype(np.float16).tobytes()
        return {
            "sha256": digest,
            "stats": {name: float(values[k]) for name, values in profile.stats.items()},
            "summary": profile.summary[k],
            "embedding": embedding,
            "embedding_dim": len(embedding) // 2,
        }


def image_response(
    card: dict[str, Any], outputs: dict[str, np.ndarray], summary: dict[str, Any], *, masks: bool
) -> dict[str, Any]:
    """One image's answer, as the registered pyfunc model gives it (one row of its frame);
    segmentation answers with the classes present and their pixel fractions, and the mask
    as a PNG of class indices when asked (a mask as JSON lists would be megabytes)."""
    from fovea.tracking.pyfunc import OUTPUT_FORMATS, PER_IMAGE

    task = card["task"]
    if task == "segmentation":
        mask = np.asarray(outputs["mask"])
        fractions = summary["class_fractions"]
        response: dict[str, Any] = {
            "classes": [name for name, value in fractions.items() if value > 0],
            "class_fractions": fractions,
            "height": int(mask.shape[0]),
            "width": int(mask.shape[1]),
        }
        if masks:
            response["mask_png"] = mask_png(mask)
        return response
    frame = OUTPUT_FORMATS.get(task, PER_IMAGE).frame(
        {key: np.asarray(value)[None] for key, value in outputs.items()}, card
    )
    return {key: _plain(value) for key, value in frame.iloc[0].to_dict().items()}


def mask_png(mask: np.ndarray) -> str:
    """Class indices [H, W] as a base64 grey PNG (8 bit up to 255 classes, else 16 bit)."""
    from PIL import Image

    mode, dtype = ("L", np.uint8) if mask.max(initial=0) < 256 else ("I;16", np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(dtype), mode=mode).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class ServingPool:
    """The API's handle on replicas: one per (model, version), created on first use."""

    def __init__(
        self,
        *,
        tracking_uri: str,
        ray_address: str | None,
        cpus: float,
        threads: int,
        max_pixels: int,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.ray_address = ray_address
        self.cpus, self.threads, self.max_pixels = cpus, threads, max_pixels
        self._replicas: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()

    def replica(self, name: str, version: int) -> Any:
        with self._lock:
            key = (name, version)
            if key not in self._replicas:
                self._connect()
                self._replicas[key] = ModelReplica.options(
                    name=actor_name(name, version),
                    namespace=NAMESPACE,
                    get_if_exists=True,
                    lifetime="detached",
                    num_cpus=self.cpus,
                    max_concurrency=4,  # describe() stays answerable while one predicts
                ).remote(
                    tracking_uri=self.tracking_uri,
                    name=name,
                    version=version,
                    threads=self.threads,
                    max_pixels=self.max_pixels,
                )
            return self._replicas[key]

    def predict(
        self, name: str, version: int, images: Sequence[ImageInput], *, masks: bool = False
    ) -> list[dict[str, Any]]:
        replica = self.replica(name, version)
        try:
            return ray.get(replica.predict.remote(list(images), masks=masks))
        except ray.exceptions.RayActorError:
            # the replica died (or failed to load): forget it so the next request rebuilds it
            with self._lock:
                self._replicas.pop((name, version), None)
            raise

    def describe(self, name: str, version: int) -> dict[str, Any]:
        return ray.get(self.replica(name, version).describe.remote())

    def retire(self, name: str, keep: int) -> None:
        """Stop this pool's replicas of `name` other than version `keep` (the alias moved)."""
        with self._lock:
            old = [(k, r) for k, r in self._replicas.items() if k[0] == name and k[1] != keep]
            for key, replica in old:
                self._replicas.pop(key)
                ray.kill(replica)
                log.info("stopped replica %s v%d: its alias moved to v%d", name, key[1], keep)

    def _connect(self) -> None:
        from fovea.workers.backend import embedded

        local = embedded() if self.ray_address is None else None
        if local is not None:  # `fovea up`: the scheduler's local Ray, kept up while serving
            local.hold("serving")
        elif not ray.is_initialized():
            ray.init(address=self.ray_address or "auto", namespace=NAMESPACE)


def actor_name(name: str, version: int) -> str:
    return f"{ACTOR_PREFIX}{name}-v{version}"
