"""A small HTTP client of the Fovea API (used by the CLI, the dashboard and tests)."""

from __future__ import annotations

from typing import Any

import httpx

from fovea.config import Settings


class ApiError(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"HTTP {status}: {message}" if status else str(message))
        self.status = status
        self.body = body


class Client:
    def __init__(self, base_url: str, token: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings, base_url: str | None = None) -> Client:
        return cls(base_url or settings.base_url, settings.resolve_token(create=False))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(
                0,
                {
                    "message": f"cannot reach the Fovea API at {self.http.base_url} ({exc}); "
                    "is `fovea up` running?"
                },
            ) from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._send(method, path, **kwargs)
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, body)
        return body

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def submit(self, spec: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/jobs", json=spec, headers=headers)

    def jobs(self, **params: Any) -> dict[str, Any]:
        return self._call("GET", "/jobs", params={k: v for k, v in params.items() if v is not None})

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}")

    def job_queue(self, job_id: str) -> dict[str, Any]:
        """Why a queued job waits: place in line, backoff, quota, what running jobs hold."""
        return self._call("GET", f"/jobs/{job_id}/queue")

    def catalog(self) -> dict[str, Any]:
        """What a job spec may name: per task architectures, backbones, formats, ..."""
        return self._call("GET", "/catalog")

    def weights(self) -> dict[str, Any]:
        return self._call("GET", "/weights")

    def weights_entry(self, name: str, *, verify: bool = False) -> dict[str, Any]:
        return self._call("GET", f"/weights/{name}", params={"verify": str(verify).lower()})

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job_id}/cancel")

    def job_metrics(self, job_id: str, *, keys: list[str] | None = None) -> dict[str, Any]:
        """{"run_id", "metrics": {name: [{"step", "value", "timestamp"}, ...]}}"""
        return self._call("GET", f"/jobs/{job_id}/metrics", params={"key": keys} if keys else {})

    def job_artifacts(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}/artifacts")

    def job_artifact(self, job_id: str, name: str) -> bytes:
        """One artifact of the job's run by its allow-listed name (e.g. confusion_matrix.png)."""
        return self._bytes(f"/jobs/{job_id}/artifacts/{name}")

    def _bytes(self, path: str) -> bytes:
        resp = self._send("GET", path)
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = resp.text
            raise ApiError(resp.status_code, body)
        return resp.content

    def models(self) -> dict[str, Any]:
        return self._call("GET", "/models")

    def model(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/models/{name}")

    # -- schedules and the promotion gate ------------------------------------------------

    def schedules(self) -> dict[str, Any]:
        return self._call("GET", "/schedules")

    def schedule(self, schedule_id: str, *, events: int = 20) -> dict[str, Any]:
        return self._call("GET", f"/schedules/{schedule_id}", params={"events": events})

    def schedule_events(
        self, schedule_id: str, *, kind: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, **({"kind": kind} if kind else {})}
        return self._call("GET", f"/schedules/{schedule_id}/events", params=params)

    def create_schedule(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/schedules", json=body)

    def update_schedule(self, schedule_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"/schedules/{schedule_id}", json=changes)

    def delete_schedule(self, schedule_id: str) -> None:
        self._call("DELETE", f"/schedules/{schedule_id}")

    def promote(self, name: str, *, version: int, reason: str) -> dict[str, Any]:
        body = {"version": version, "reason": reason}
        return self._call("POST", f"/models/{name}/promote", json=body)

    def rollback(self, name: str, *, reason: str) -> dict[str, Any]:
        return self._call("POST", f"/models/{name}/rollback", json={"reason": reason})

    def model_events(self, name: str, *, kind: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", f"/models/{name}/events", params={"kind": kind} if kind else {})

    # -- serving and monitoring --------------------------------------------------------

    def predict(
        self,
        name: str,
        files: list[tuple[str, bytes]],
        *,
        alias: str | None = None,
        version: int | None = None,
        masks: bool = False,
    ) -> dict[str, Any]:
        params = {"alias": alias, "version": version, "masks": "true" if masks else None}
        return self._call(
            "POST",
            f"/models/{name}/predict",
            files=[("files", (file_name, data)) for file_name, data in files],
            params={k: v for k, v in params.items() if v is not None},
        )

    def drift(self, name: str, *, limit: int = 50) -> dict[str, Any]:
        return self._call("GET", f"/models/{name}/drift", params={"limit": limit})

    def compute_drift(
        self, name: str, *, window: int = 500, alias: str | None = None, version: int | None = None
    ) -> dict[str, Any]:
        params = {"window": window, "alias": alias, "version": version}
        return self._call(
            "POST",
            f"/models/{name}/drift",
            params={k: v for k, v in params.items() if v is not None},
        )

    def drift_plot(self, name: str, report_id: int, plot: str) -> bytes:
        """A drift report's PNG: histograms.png (reference vs live) or mmd.png."""
        return self._bytes(f"/models/{name}/drift/{report_id}/plots/{plot}")

    def predictions(
        self,
        name: str,
        *,
        limit: int = 100,
        before_id: int | None = None,
        from_id: int | None = None,
        sampled: bool = False,
    ) -> dict[str, Any]:
        params = {"limit": limit, "before_id": before_id, "from_id": from_id}
        params = {k: v for k, v in params.items() if v is not None}
        if sampled:
            params["sampled"] = "true"
        return self._call("GET", f"/models/{name}/predictions", params=params)

    def prediction_image(self, name: str, prediction_id: int) -> bytes:
        """The kept copy of a live image (prediction_sample_rate > 0)."""
        return self._bytes(f"/models/{name}/predictions/{prediction_id}/image")

    def score(
        self, name: str, folder: str, *, alias: str | None = None, version: int | None = None
    ) -> dict[str, Any]:
        body = {"folder": folder, "alias": alias, "version": version}
        return self._call(
            "POST", f"/models/{name}/score", json={k: v for k, v in body.items() if v is not None}
        )

    def score_run(self, name: str, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/models/{name}/score/{run_id}")
