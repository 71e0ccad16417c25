"""The API's side of serving: which version an alias names, the pool of model replicas on
Ray, the share of live images kept for people to review, and the prediction log.

One `Predictor` per API process (on `app.state.predictor`). Replicas never run in the API
process: `fovea.workers.serving.ServingPool` starts them on the Ray cluster the first time a
model is asked for. Ray, numpy and MLflow load on first use, so an API that never predicts
starts without them.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fovea.platform.errors import BadImages, NotFound, Unavailable
from fovea.platform.store import transaction

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from fovea.config import Settings
    from fovea.platform.monitoring.service import ReferenceCache
    from fovea.tracking.versions import ResolvedVersion
    from fovea.workers.serving import ImageInput, ServingPool

RESOLVE_TTL_S = 2.0  # an alias moved in MLflow reaches serving within this time


@dataclass(frozen=True)
class Served:
    """What one predict request got: the version that answered and one result per image."""

    resolved: ResolvedVersion
    request_id: str
    results: list[dict[str, Any]]  # {"file", "ok", "error" | "response", "log"} per image


class Predictor:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self._resolved: dict[tuple[str, str | None, int | None], tuple[float, ResolvedVersion]]
        self._resolved = {}
        self._lock = threading.Lock()
        self._pool: ServingPool | None = None
        self._references: ReferenceCache | None = None

    def resolve(self, name: str, alias: str | None, version: int | None) -> ResolvedVersion:
        """The version `alias` (default champion) or `version` names, looked up at most every
        RESOLVE_TTL_S per alias. NotFound names what is missing."""
        from fovea.tracking.registry import ModelNotFoundError
        from fovea.tracking.versions import resolve_version

        key = (name, alias, version)
        cached = self._resolved.get(key)
        if cached is not None and time.monotonic() - cached[0] < RESOLVE_TTL_S:
            return cached[1]
        try:
            found = resolve_version(
                tracking_uri=self.settings.tracking_uri, name=name, alias=alias, version=version
            )
        except ModelNotFoundError as exc:
            raise NotFound(str(exc)) from None
        self._resolved[key] = (time.monotonic(), found)
        return found

    @property
    def pool(self) -> ServingPool:
        """The replicas on Ray, created on first use."""
        with self._lock:
            if self._pool is None:
                from fovea.workers.serving import ServingPool

                s = self.settings
                self._pool = ServingPool(
                    tracking_uri=s.tracking_uri,
                    ray_address=s.ray_address,
                    cpus=s.serving_cpus,
                    threads=s.serving_threads,
                    max_pixels=s.predict_max_pixels,
                )
            return self._pool

    @property
    def references(self) -> ReferenceCache:
        """The drift reference of each version, loaded once."""
        with self._lock:
            if self._references is None:
                from fovea.platform.monitoring.service import reference_cache

                self._references = reference_cache(self.settings.tracking_uri)
            return self._references

    def predict(
        self,
        name: str,
        images: list[ImageInput],
        *,
        alias: str | None = None,
        version: int | None = None,
        masks: bool = False,
        source: str = "api",
    ) -> Served:
        """Predict on the replica of the version named, keep the sampled images, and log
        every image. BadImages when none could be read (nothing is logged then)."""
        resolved = self.resolve(name, alias, version)
        try:
            results = self.pool.predict(resolved.name, resolved.version, images, masks=masks)
        except ConnectionError as exc:
            raise Unavailable(f"serving needs a Ray cluster: {exc}", retry_after_s=30) from None
        if "champion" in resolved.aliases:
            self.pool.retire(resolved.name, keep=resolved.version)  # the champion moved
        if not any(r["ok"] for r in results):
            raise BadImages([{"field": r["file"], "problem": r["error"]} for r in results])
        served = Served(resolved=resolved, request_id=uuid.uuid4().hex, results=results)
        self._log(served, source=source, image_uris=self._keep_samples(name, images, results))
        return served

    def _keep_samples(
        self, name: str, images: list[ImageInput], results: list[dict[str, Any]]
    ) -> list[str | None]:
        """Keep a share (prediction_sample_rate) of the images for people to look at later."""
        uris: list[str | None] = []
        for image, result in zip(images, results, strict=True):
            if not result["ok"] or random.random() >= self.settings.prediction_sample_rate:
                uris.append(None)
                continue
            folder = self.settings.prediction_samples / name
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / (result["log"]["sha256"] + Path(image.name).suffix.lower()[:8])
            path.write_bytes(image.data or b"")
            uris.append(str(path))
        return uris

    def _log(self, served: Served, *, source: str, image_uris: list[str | None]) -> None:
        from fovea.platform.monitoring.service import log_predictions

        with transaction(self.sessions) as session:
            log_predictions(
                session=session,
                model_name=served.resolved.name,
                version=served.resolved.version,
                request_id=served.request_id,
                source=source,
                results=served.results,
                image_uris=image_uris,
            )
