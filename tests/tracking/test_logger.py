"""RunLogger against a real sqlite MLflow store: batching, flushing, names, params, artifacts."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fovea import priority
from fovea.tracking import RunLogger, sanitize_key
from fovea.tracking._mlflow import make_client

if TYPE_CHECKING:
    from tests.support.stores import MlflowStore


class CallCounter:
    """Wraps the logger's real MlflowClient.log_batch, recording each call's size and thread."""

    def __init__(self, run_logger: RunLogger) -> None:
        self.calls: list[tuple[int, str]] = []  # (metric points, thread name)
        real: Callable[..., Any] = run_logger.client.log_batch

        def log_batch(run_id: str, metrics: Any = (), **kwargs: Any) -> Any:
            self.calls.append((len(metrics), threading.current_thread().name))
            return real(run_id, metrics=metrics, **kwargs)

        run_logger.client.log_batch = log_batch  # type: ignore[method-assign]

    @property
    def metric_calls(self) -> list[tuple[int, str]]:
        return [c for c in self.calls if c[0] > 0]


def _open(store: MlflowStore, experiment: str, **kwargs: Any) -> RunLogger:
    return RunLogger(
        tracking_uri=store.tracking_uri,
        experiment=experiment,
        artifact_root=store.artifact_root,
        **kwargs,
    )


def test_many_steps_go_out_in_few_batches(mlflow_store: MlflowStore, unique_name: str) -> None:
    run_logger = _open(mlflow_store, unique_name, run_name="batching")
    counter = CallCounter(run_logger)
    blocked_before = run_logger.blocking_seconds
    for step in range(500):
        run_logger.log_metrics({"train/loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
    # Appending to the buffer never waits on MLflow.
    assert run_logger.blocking_seconds == blocked_before
    run_logger.close()

    client = make_client(mlflow_store.tracking_uri)
    history = client.get_metric_history(run_logger.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(500))
    assert len(client.get_metric_history(run_logger.run_id, "lr")) == 500
    # 1000 points: one flush-at-1000 batch and/or the final flush, never one call per step.
    assert 1 <= len(counter.metric_calls) <= 3
    assert sum(n for n, _ in counter.metric_calls) == 1000
    assert client.get_run(run_logger.run_id).info.status == "FINISHED"
    assert run_logger.mlflow_seconds > 0
    # 1000 points into sqlite take CPU, never more than the calls' wall time
    assert 0 < run_logger.mlflow_cpu_seconds <= run_logger.mlflow_seconds


def test_flusher_sends_in_background(mlflow_store: MlflowStore, unique_name: str) -> None:
    run_logger = _open(mlflow_store, unique_name, flush_interval_s=0.1)
    counter = CallCounter(run_logger)
    client = make_client(mlflow_store.tracking_uri)
    run_logger.log_metrics({"val/top1": 0.5}, step=1)
    deadline = time.monotonic() + 10
    while not client.get_run(run_logger.run_id).data.metrics and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get_run(run_logger.run_id).data.metrics == {"val/top1": 0.5}
    # Sent by the flusher thread, not the caller, without any flush() call.
    assert len(counter.metric_calls) == 1
    assert counter.metric_calls[0][1] != threading.current_thread().name
    run_logger.close()


def test_batches_respect_the_1000_point_limit(mlflow_store: MlflowStore, unique_name: str) -> None:
    with _open(mlflow_store, unique_name) as run_logger:
        counter = CallCounter(run_logger)
        run_logger.log_metrics({f"val/f1/class{i}": i / 2500 for i in range(2500)}, step=0)
    run = make_client(mlflow_store.tracking_uri).get_run(run_logger.run_id)
    assert len(run.data.metrics) == 2500
    assert max(n for n, _ in counter.metric_calls) <= 1000
    assert sum(n for n, _ in counter.metric_calls) == 2500


def test_back_pressure_keeps_every_point(mlflow_store: MlflowStore, unique_name: str) -> None:
    with _open(mlflow_store, unique_name, flush_at=50, max_buffered=100) as run_logger:
        for step in range(400):
            run_logger.log_metrics({"loss": float(step)}, step=step)
    history = make_client(mlflow_store.tracking_uri).get_metric_history(run_logger.run_id, "loss")
    assert len(history) == 400


def test_non_finite_dropped_and_names_sanitized(
    mlflow_store: MlflowStore, unique_name: str
) -> None:
    with _open(mlflow_store, unique_name) as run_logger:
        run_logger.log_metrics(
            {
                "f1/daisy": 0.25,
                "loss:box": 1.5,
                "a//b/": 2.0,
                "../up": 3.0,
                "nan": float("nan"),
                "inf": float("inf"),
                "neg_inf": float("-inf"),
            },
            step=3,
        )
    assert run_logger.dropped_nonfinite == 3
    metrics = make_client(mlflow_store.tracking_uri).get_run(run_logger.run_id).data.metrics
    assert metrics == {"f1/daisy": 0.25, "loss_box": 1.5, "a/b": 2.0, "__/up": 3.0}


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("f1/daisy", "f1/daisy"),
        ("x y-z.w", "x y-z.w"),
        ("a:b", "a_b"),
        ("/a/./b", "a/b"),
        ("ü", "ü"),
        ("%", "_"),
        ("", "_"),
        ("x" * 300, "x" * 250),
    ],
)
def test_sanitize_key(raw: str, clean: str) -> None:
    assert sanitize_key(raw) == clean


def test_params_flatten_truncate_and_resume(mlflow_store: MlflowStore, unique_name: str) -> None:
    client = make_client(mlflow_store.tracking_uri)
    with _open(mlflow_store, unique_name, tags={"fovea.job_id": "j1"}) as first:
        first.log_params({"train": {"lr": 0.001, "epochs": 3}, "note": "x" * 7000, "w": None})
        first.log_metrics({"loss": 1.0}, step=0)
    run = client.get_run(first.run_id)
    assert run.data.params["train.lr"] == "0.001"
    assert run.data.params["train.epochs"] == "3"
    assert len(run.data.params["note"]) == 6000
    assert run.data.tags["fovea.job_id"] == "j1"

    # A retried job resumes the run, logs the same params again and a new attempt tag.
    resumed = RunLogger(
        tracking_uri=mlflow_store.tracking_uri, run_id=first.run_id, tags={"fovea.attempt": 2}
    )
    assert client.get_run(first.run_id).info.status == "RUNNING"
    resumed.log_params({"train": {"lr": 0.001, "epochs": 5}, "seed": 1})
    resumed.log_metrics({"loss": 0.5}, step=1)
    resumed.close("FAILED")
    run = client.get_run(first.run_id)
    assert run.info.status == "FAILED"
    assert run.data.params["train.epochs"] == "3"  # MLflow params never change
    assert run.data.params["seed"] == "1"
    assert run.data.tags["fovea.attempt"] == "2"
    assert [m.value for m in client.get_metric_history(first.run_id, "loss")] == [1.0, 0.5]


def test_artifacts(mlflow_store: MlflowStore, unique_name: str, tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "last.pt").write_bytes(b"weights")
    with _open(mlflow_store, unique_name) as run_logger:
        run_logger.log_figure_bytes("curves.png", b"\x89PNG fake")
        run_logger.log_json("confusion.json", {"m": [[1, 0], [0, 1]], "bad": float("nan")})
        run_logger.log_artifact(tmp_path / "ckpt", artifact_path="checkpoints")
        with pytest.raises(ValueError, match="plain file name"):
            run_logger.log_figure_bytes("../x.png", b"")
    # Artifacts land under the configured folder, not ./mlruns.
    assert run_logger.artifact_uri.startswith(mlflow_store.artifact_root.as_uri())
    root = Path(run_logger.artifact_uri.removeprefix("file://"))
    assert (root / "plots" / "curves.png").read_bytes() == b"\x89PNG fake"
    assert json.loads((root / "tables" / "confusion.json").read_text()) == {
        "m": [[1, 0], [0, 1]],
        "bad": None,
    }
    assert (root / "checkpoints" / "last.pt").read_bytes() == b"weights"


def test_exception_ends_run_failed_after_flushing(
    mlflow_store: MlflowStore, unique_name: str
) -> None:
    with pytest.raises(RuntimeError), _open(mlflow_store, unique_name) as run_logger:
        run_logger.log_metrics({"loss": 2.0}, step=0)
        raise RuntimeError("boom")
    run = make_client(mlflow_store.tracking_uri).get_run(run_logger.run_id)
    assert run.info.status == "FAILED"
    assert run.data.metrics == {"loss": 2.0}
    run_logger.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        run_logger.log_metrics({"loss": 1.0}, step=1)


def test_same_experiment_is_reused(mlflow_store: MlflowStore, unique_name: str) -> None:
    with _open(mlflow_store, unique_name) as a, _open(mlflow_store, unique_name) as b:
        assert a.experiment_id == b.experiment_id
        assert a.run_id != b.run_id


def test_resumed_run_never_logs_a_step_twice(mlflow_store: MlflowStore, unique_name: str) -> None:
    """An attempt died after logging steps 1..5 (its checkpoint was at step 3); the retry
    replays steps 4..8: the history keeps one point per step, the first attempt's."""
    client = make_client(mlflow_store.tracking_uri)
    first = _open(mlflow_store, unique_name)
    for step in range(1, 6):
        first.log_metrics({"train/loss": 1.0, "val/top1": 0.1}, step=step)
    first.flush()  # then SIGKILL: no close, the run stays RUNNING
    resumed = RunLogger(tracking_uri=mlflow_store.tracking_uri, run_id=first.run_id)
    for step in range(4, 9):
        resumed.log_metrics({"train/loss": 2.0, "new/metric": 3.0}, step=step)
    resumed.close("FINISHED")
    history = client.get_metric_history(first.run_id, "train/loss")
    steps = [m.step for m in history]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6, 7, 8], steps
    assert {m.step: m.value for m in history}[5] == 1.0
    assert len(client.get_metric_history(first.run_id, "new/metric")) == 5


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling classes")
def test_the_flush_thread_runs_in_the_class_of_the_thread_that_opened_the_run(
    mlflow_store: MlflowStore, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In a job that is the training thread (normal class) inside a batch-class process: a
    # batch flusher would wait for a training time slice on every call and its wall time
    # would count the wait as MLflow's (fovea.priority).
    monkeypatch.delenv("FOVEA_CONTROL_PLANE_BATCH", raising=False)
    seen: dict[str, int] = {}

    def open_run(label: str, *, training: bool) -> None:
        priority.yield_to_training()
        with priority.doing_the_work() if training else contextlib.nullcontext():
            run_logger = _open(mlflow_store, unique_name, run_name=label)
        try:
            (flusher,) = [
                t
                for t in threading.enumerate()
                if t.name == f"mlflow-flush-{run_logger.run_id[:8]}"
            ]
            assert flusher.native_id is not None
            seen[label] = os.sched_getscheduler(flusher.native_id)
        finally:
            run_logger.close()

    for label, training in (("training", True), ("control-plane", False)):
        thread = threading.Thread(target=open_run, args=(label,), kwargs={"training": training})
        thread.start()
        thread.join(60)
    assert seen == {"training": os.SCHED_OTHER, "control-plane": os.SCHED_BATCH}
