"""RunLogger: one MLflow run, with metrics buffered and sent by a background thread.

A training step only appends to a list; a flusher thread sends `log_batch` calls of up to
1000 points every `flush_interval_s` (or sooner when `flush_at` points wait). Rare things
(params, figures, tables, files) go straight to MLflow from the caller.

Two clocks tell what MLflow costs a job: `mlflow_seconds` is wall time inside MLflow client
calls on any thread; `blocking_seconds` is time the calling (training) thread spent waiting
on MLflow, which buffering keeps near zero between flushes.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from fovea.tracking._mlflow import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VALUE_LENGTH,
    MAX_PARAMS_PER_BATCH,
    MAX_TAG_VALUE_LENGTH,
    ensure_experiment,
    make_client,
    sanitize_key,
)

_log = logging.getLogger(__name__)

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
T = TypeVar("T")

# A batch that fails this many times in a row is dropped (and counted) rather than kept
# forever: losing a few curve points must never take a training job down.
_MAX_SEND_ATTEMPTS = 3

_open_loggers: weakref.WeakSet[RunLogger] = weakref.WeakSet()


@atexit.register
def _flush_open_loggers() -> None:
    # The flusher is a daemon thread: without this, points buffered by a script that forgot
    # close() would vanish at interpreter exit.
    for run_logger in list(_open_loggers):
        run_logger.flush()


class RunLogger:
    """Log to a new MLflow run, or resume `run_id` when a job is retried.

    Use as a context manager, or call close(); an exception inside the `with` block ends
    the run FAILED (KILLED for KeyboardInterrupt).
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        artifact_root: str | Path | None = None,
        flush_interval_s: float = 2.0,
        flush_at: int = MAX_METRICS_PER_BATCH,
        max_buffered: int = 200_000,
    ) -> None:
        if (experiment is None) == (run_id is None):
            raise ValueError("give exactly one of experiment (new run) or run_id (resume)")
        if flush_interval_s <= 0:
            raise ValueError(f"flush_interval_s must be > 0, got {flush_interval_s}")
        self.tracking_uri = tracking_uri
        self._flush_interval_s = flush_interval_s
        self._flush_at = max(1, flush_at)
        self._max_buffered = max(self._flush_at, max_buffered)

        self._lock = threading.Lock()  # guards the buffer and the counters
        self._wake = threading.Condition(self._lock)  # flusher waits here; callers notify
        self._drained = threading.Condition(self._lock)  # back-pressure waits here
        self._send_lock = threading.Lock()  # one batch in flight: keeps sqlite writes serial
        self._buffer: deque[Metric] = deque()
        self._retry: list[tuple[list[Metric], int]] = []  # (batch, attempts so far)
        self._keys: dict[str, str] = {}  # raw metric name -> sanitized, computed once
        self._logged_upto: dict[str, int] = {}  # resumed run: key -> last step logged before
        self._mlflow_s = 0.0
        self._mlflow_cpu_s = 0.0
        self._blocking_s = 0.0
        self._local = threading.local()  # nesting depth of blocking sections per thread
        self.dropped_nonfinite = 0
        self.dropped_failed = 0
        self.points_sent = 0
        self.batches_sent = 0
        self._closed = False
        self._stopping = False

        with self._blocking():
            # Building a client opens the store (and creates a new sqlite schema): MLflow time.
            self.client: MlflowClient = self._call(make_client, tracking_uri)
            if run_id is None:
                assert experiment is not None
                experiment_id = self._call(
                    ensure_experiment, self.client, name=experiment, artifact_root=artifact_root
                )
                run = self._call(
                    self.client.create_run,
                    experiment_id,
                    run_name=run_name,
                    tags={sanitize_key(k): _tag_value(v) for k, v in (tags or {}).items()},
                )
                self._params: dict[str, str] = {}
            else:
                run = self._call(self.client.get_run, run_id)
                # A retried job logs its params again: remember them to skip the unchanged.
                self._params = dict(run.data.params)
                # ... and replays the steps between its last checkpoint and its death: keep
                # the points already logged, never a second point at one step.
                self._logged_upto = {
                    key: self._call(_last_step, self.client, run_id, key)
                    for key in run.data.metrics
                }
                self._call(self.client.update_run, run_id, status="RUNNING")
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        self.artifact_uri: str = run.info.artifact_uri
        if run_id is not None and tags:
            self.set_tags(tags)

        self._thread = threading.Thread(
            target=self._flush_loop, name=f"mlflow-flush-{self.run_id[:8]}", daemon=True
        )
        self._thread.start()
        _open_loggers.add(self)

    # -- timing -------------------------------------------------------------------------

    @property
    def mlflow_seconds(self) -> float:
        """Wall seconds spent inside MLflow client calls, on any thread."""
        with self._lock:
            return self._mlflow_s

    @property
    def mlflow_cpu_seconds(self) -> float:
        """CPU seconds the threads making MLflow client calls spent in them: what the calls
        took from the cores training runs on (wall time adds the waits on the store)."""
        with self._lock:
            return self._mlflow_cpu_s

    @property
    def blocking_seconds(self) -> float:
        """Seconds the calling thread(s) spent blocked on MLflow (not the flusher)."""
        with self._lock:
            return self._blocking_s

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed, spent = time.perf_counter() - start, time.thread_time() - cpu
            with self._lock:
                self._mlflow_s += elapsed
                self._mlflow_cpu_s += spent

    @contextmanager
    def _blocking(self) -> Iterator[None]:
        # Outermost section only, so close() -> flush() is not counted twice.
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                elapsed = time.perf_counter() - start
                with self._lock:
                    self._blocking_s += elapsed

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Count a block of direct MLflow work done for this run (e.g. logging the model)
        in both clocks."""
        start = time.perf_counter()
        with self._blocking():
            try:
                yield
            finally:
                elapsed = time.perf_counter() - start
                with self._lock:
                    self._mlflow_s += elapsed

    # -- metrics (buffered) -------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        """Queue metric points; never waits on MLflow unless `max_buffered` points are
        already waiting (back-pressure, counted in blocking_seconds)."""
        timestamp = int(time.time() * 1000)
        points = []
        nonfinite = 0
        for name, raw in metrics.items():
            value = float(raw)
            if not math.isfinite(value):
                nonfinite += 1
                continue
            key = self._keys.get(name)
            if key is None:
                key = self._keys.setdefault(name, sanitize_key(name))
            if self._logged_upto and int(step) <= self._logged_upto.get(key, -(2**62)):
                continue  # logged by an earlier attempt of this run
            points.append(Metric(key=key, value=value, timestamp=timestamp, step=int(step)))
        with self._lock:
            self.dropped_nonfinite += nonfinite
            if not points:
                return
            if self._closed:
                raise RuntimeError(f"run {self.run_id} is closed")
            if len(self._buffer) >= self._max_buffered:
                start = time.perf_counter()
                self._wake.notify()
                while len(self._buffer) >= self._max_buffered and not self._stopping:
                    self._drained.wait(timeout=1.0)
                self._blocking_s += time.perf_counter() - start
            self._buffer.extend(points)
            if len(self._buffer) >= self._flush_at:
                self._wake.notify()

    def _flush_loop(self) -> None:
        # In the class of the thread that opened the run (the training thread's, in a job):
        # it wakes once per flush_interval_s, so a batch class would save training nothing,
        # and it would make each call wait for a training time slice, so the wall time of
        # the calls (what the overhead benchmark judges) would count that wait as MLflow's.
        while True:
            with self._lock:
                if len(self._buffer) < self._flush_at and not self._stopping:
                    self._wake.wait(timeout=self._flush_interval_s)
                if self._stopping:
                    return  # close() sends what is left, on its own thread
            self._send_buffered()

    def _send_buffered(self) -> None:
        with self._send_lock:
            with self._lock:
                pending = self._retry
                self._retry = []
                while self._buffer:
                    n = min(MAX_METRICS_PER_BATCH, len(self._buffer))
                    pending.append(([self._buffer.popleft() for _ in range(n)], 0))
                self._drained.notify_all()
            for batch, attempts in pending:
                try:
                    self._call(self.client.log_batch, self.run_id, metrics=batch)
                except Exception as exc:
                    if attempts + 1 >= _MAX_SEND_ATTEMPTS:
                        _log.warning(
                            "dropping %d metric points of run %s after %d failed attempts: %s",
                            len(batch),
                            self.run_id,
                            attempts + 1,
                            exc,
                        )
                        with self._lock:
                            self.dropped_failed += len(batch)
                    else:
                        _log.info("log_batch failed (will retry): %s", exc)
                        with self._lock:
                            self._retry.append((batch, attempts + 1))
                    continue
                with self._lock:
                    self.points_sent += len(batch)
                    self.batches_sent += 1

    def flush(self) -> None:
        """Send every buffered point now (on the calling thread)."""
        with self._blocking():
            self._send_buffered()

    # -- direct logging -----------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; nested mappings flatten to dotted keys ({"train": {"lr": 1}} ->
        "train.lr"), values are str() truncated to MLflow's 6000 characters. A key already
        logged with the same value is skipped (a retried job); MLflow forbids changing one,
        so a different value is skipped with a warning."""
        new: dict[str, str] = {}
        for raw_key, raw_value in _flatten(params).items():
            key = sanitize_key(raw_key)
            value = str(raw_value)[:MAX_PARAM_VALUE_LENGTH]
            old = self._params.get(key, new.get(key))
            if old is None:
                new[key] = value
            elif old != value:
                _log.warning("param %r of run %s stays %r (not %r)", key, self.run_id, old, value)
        items = [Param(k, v) for k, v in new.items()]
        with self._blocking():
            for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
                chunk = items[i : i + MAX_PARAMS_PER_BATCH]
                self._call(self.client.log_batch, self.run_id, params=chunk)
        self._params.update(new)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(sanitize_key(k), _tag_value(v)) for k, v in tags.items()]
        with self._blocking():
            for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
                chunk = items[i : i + MAX_PARAMS_PER_BATCH]
                self._call(self.client.log_batch, self.run_id, tags=chunk)

    def log_artifact(self, path: str | Path, *, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's contents, under the run's artifacts."""
        local = Path(path)
        if not local.exists():
            raise FileNotFoundError(f"no file or folder at {local}")
        upload = self.client.log_artifacts if local.is_dir() else self.client.log_artifact
        with self._blocking():
            self._call(upload, self.run_id, str(local), artifact_path)

    def log_bytes(self, name: str, data: bytes, *, artifact_path: str | None = None) -> None:
        _check_file_name(name)
        with tempfile.TemporaryDirectory(prefix="fovea-artifact-") as tmp:
            local = Path(tmp) / name
            local.write_bytes(data)
            self.log_artifact(local, artifact_path=artifact_path)

    def log_figure_bytes(
        self, name: str, png_bytes: bytes, *, artifact_path: str = "plots"
    ) -> None:
        """A rendered figure (PNG bytes, e.g. from EvalResult.figures) as plots/<name>."""
        self.log_bytes(name, png_bytes, artifact_path=artifact_path)

    def log_json(self, name: str, obj: Any, *, artifact_path: str | None = "tables") -> None:
        """A JSON-able object as tables/<name>; numpy values become plain numbers and
        NaN/inf become null (JSON has no spelling for them)."""
        text = json.dumps(_jsonable(obj), indent=2, allow_nan=False)
        self.log_bytes(name, text.encode(), artifact_path=artifact_path)

    def log_dataset(
        self,
        *,
        name: str,
        digest: str,
        source: str,
        profile: Mapping[str, Any],
        context: str = "training",
    ) -> None:
        """Record what the run read as an MLflow dataset input (the run's Datasets tab).

        MLflow keeps at most 36 characters of a digest: the first 32 hex digits of a
        "sha256:<hex>" digest go there, the whole one in `profile` (JSON, e.g. file counts).
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name[:500],
            digest=digest.removeprefix("sha256:")[:32],
            source_type="builtin" if source.startswith("builtin://") else "local",
            source=json.dumps({"uri": source}),
            profile=json.dumps(_jsonable({**profile, "digest": digest})),
        )
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])]
        with self._blocking():
            self._call(self.client.log_inputs, self.run_id, datasets=inputs)

    # -- end ----------------------------------------------------------------------------

    def close(self, status: RunStatus = "FINISHED") -> None:
        """Stop the flusher, send what is left, and end the run with `status`. Idempotent."""
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise ValueError(f"status must be FINISHED, FAILED or KILLED, got {status!r}")
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._wake.notify_all()
            self._drained.notify_all()
        _open_loggers.discard(self)
        with self._blocking():
            self._thread.join()
            self._send_buffered()
            if self._retry:  # one last chance for batches that failed recently
                self._send_buffered()
            self._call(self.client.set_terminated, self.run_id, status)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("KILLED")
        else:
            self.close("FAILED")


def _last_step(client: MlflowClient, run_id: str, key: str) -> int:
    return max((m.step for m in client.get_metric_history(run_id, key)), default=-(2**62))


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def _tag_value(value: Any) -> str:
    return str(value)[:MAX_TAG_VALUE_LENGTH]


def _check_file_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"artifact name must be a plain file name, got {name!r}")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
