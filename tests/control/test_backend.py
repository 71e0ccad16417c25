"""The failure policy's first half: every way an attempt ends becomes one typed Outcome.

Exceptions are sorted by `classify_exception` (pure), and RayBackend.poll sorts what a
real local Ray reports: a returned result, a worker that died (os._exit, as SIGKILL or the
OOM killer leave it), an exception escaping the worker, a force-cancelled task.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fovea.tasks.errors import UserError
from fovea.workers.failures import OutcomeKind, classify_exception, outcome_of_result
from fovea.workers.types import JobResult


class ConnectionError(Exception):  # noqa: A001  (named like requests' own, which is no builtin)
    pass


class MlflowException(Exception):
    def __init__(self, message: str, error_code: str) -> None:
        super().__init__(message)
        self.error_code = error_code


def _chained(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as exc:
            raise outer from exc
    except Exception as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (UserError("dataset.uri: no images"), OutcomeKind.USER_ERROR),
        (_chained(RuntimeError("wrapped"), UserError("bad label")), OutcomeKind.USER_ERROR),
        (MemoryError(), OutcomeKind.INFRA),
        (OSError(errno.ENOSPC, "No space left on device"), OutcomeKind.INFRA),
        (OSError(errno.EIO, "I/O error"), OutcomeKind.INFRA),
        (TimeoutError("read timed out"), OutcomeKind.INFRA),
        (ConnectionError("HTTPConnectionPool: Max retries exceeded"), OutcomeKind.INFRA),
        (MlflowException("API request failed", "TEMPORARILY_UNAVAILABLE"), OutcomeKind.INFRA),
        (
            _chained(MlflowException("boom", "INTERNAL_ERROR"), ConnectionRefusedError()),
            OutcomeKind.INFRA,
        ),
        (MlflowException("bad param", "INVALID_PARAMETER_VALUE"), OutcomeKind.INTERNAL),
        (OSError(errno.ENOENT, "No such file"), OutcomeKind.INTERNAL),
        (KeyError("x"), OutcomeKind.INTERNAL),
        (ZeroDivisionError(), OutcomeKind.INTERNAL),
    ],
)
def test_classify_exception(exc: Exception, kind: OutcomeKind) -> None:
    assert classify_exception(exc) is kind


def test_torch_out_of_memory_is_retried() -> None:
    import torch

    assert classify_exception(torch.cuda.OutOfMemoryError("CUDA out of memory")) is (
        OutcomeKind.INFRA
    )


@pytest.mark.parametrize(
    ("result", "kind"),
    [
        (JobResult(status="succeeded"), OutcomeKind.FINISHED),
        (JobResult(status="cancelled"), OutcomeKind.CANCELLED),
        (JobResult(status="failed", error="x", failure="user_error"), OutcomeKind.USER_ERROR),
        (JobResult(status="failed", error="x", failure="infra"), OutcomeKind.INFRA),
        (JobResult(status="failed", error="x"), OutcomeKind.INTERNAL),  # a worker of old
    ],
)
def test_outcome_of_a_returned_result(result: JobResult, kind: OutcomeKind) -> None:
    assert outcome_of_result(result).kind is kind


@pytest.fixture(scope="module")
def ray_backend() -> Iterator[object]:
    from fovea.workers.backend import RayBackend

    backend = RayBackend(num_cpus=2, num_gpus=0, cancel_grace_s=0.0)
    yield backend
    backend.shutdown()


def _ended(backend, ref, *, cancel: bool = False):  # type: ignore[no-untyped-def]
    from fovea.workers.backend import Handle

    handle = Handle("job", 1, ref, 1.0, 0.0)
    if cancel:
        backend.cancel(handle)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        outcome = backend.poll(handle)
        if outcome is not None:
            return outcome
        time.sleep(0.1)
    raise AssertionError("no outcome in 60 s")


def test_ray_backend_sorts_what_ray_reports(ray_backend) -> None:  # type: ignore[no-untyped-def]
    import ray

    @ray.remote(max_retries=0)
    def returns(status: str, failure: str | None) -> JobResult:
        return JobResult(status=status, error="e" if failure else None, failure=failure)  # type: ignore[arg-type]

    @ray.remote(max_retries=0)
    def dies() -> None:
        os._exit(137)  # what SIGKILL or the OOM killer leave behind

    @ray.remote(max_retries=0)
    def raises() -> None:
        raise ValueError("a bug that escaped run_job")

    @ray.remote(max_retries=0)
    def hangs() -> None:
        time.sleep(600)

    assert _ended(ray_backend, returns.remote("succeeded", None)).kind is OutcomeKind.FINISHED
    user = _ended(ray_backend, returns.remote("failed", "user_error"))
    assert user.kind is OutcomeKind.USER_ERROR
    died = _ended(ray_backend, dies.remote())
    assert died.kind is OutcomeKind.INFRA and "WorkerCrashedError" in died.reason
    bug = _ended(ray_backend, raises.remote())
    assert bug.kind is OutcomeKind.INTERNAL and "a bug" in bug.reason
    # a worker that ignores the cancel flag is force-killed after the grace (0 s here)
    assert _ended(ray_backend, hangs.remote(), cancel=True).kind is OutcomeKind.CANCELLED


def test_ray_backend_says_when_an_attempt_ends(ray_backend) -> None:  # type: ignore[no-untyped-def]
    """`on_done` calls back once the task has ended, however it ended (the scheduler sleeps
    on it instead of polling)."""
    import threading

    import ray

    from fovea.workers.backend import Handle

    @ray.remote(max_retries=0)
    def sleeps(seconds: float) -> JobResult:
        time.sleep(seconds)
        return JobResult(status="succeeded")

    @ray.remote(max_retries=0)
    def dies() -> None:
        time.sleep(0.5)
        os._exit(137)

    for start in (lambda: sleeps.remote(1.0), dies.remote):
        ended = threading.Event()
        handle = Handle("job", 1, start(), 1.0, 0.0)
        ray_backend.on_done(handle, ended.set)
        assert not ended.is_set()  # still running
        assert ended.wait(60), "no callback after the task ended"
        assert ray_backend.poll(handle) is not None  # and poll agrees it has ended


def test_worker_output_reaches_the_console(ray_backend, capfd) -> None:  # type: ignore[no-untyped-def]
    """Ray's log monitor, which looks for new log files every 2 s instead of ten times a
    second (EMBEDDED_RAY_ENV), still brings a new worker's output to this process's console,
    every line of it."""
    import ray

    @ray.remote(max_retries=0)
    def speaks(marker: str) -> None:
        for i in range(3):
            print(f"{marker} line {i}", flush=True)

    marker = f"fovea-console-check-{os.getpid()}-{time.monotonic_ns()}"
    ray.get(speaks.options(name="fovea-speaks").remote(marker), timeout=60)
    seen = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and f"{marker} line 2" not in seen:
        time.sleep(0.5)
        seen += capfd.readouterr().out
    assert [f"{marker} line {i}" in seen for i in range(3)] == [True] * 3, seen[-2000:]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        except OSError:  # ended meanwhile
            pass
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def _command_lines(pids: list[int]) -> list[bytes]:
    lines = []
    for pid in pids:
        with contextlib.suppress(OSError):  # ended meanwhile
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
    return lines


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_local_ray_runs_no_daemon_it_has_no_use_for() -> None:
    """The embedded default's Ray leaves out the autoscaler's monitor (one machine of a
    fixed size) and the dashboard's head (Ray's dashboard is off): each would only wake the
    cores training needs. What it does need runs, and runs tasks; and it stops cleanly."""
    import ray

    from fovea.workers.backend import RayBackend

    ray.shutdown()  # a Ray another test left up may not have been started by Fovea
    backend = RayBackend(num_cpus=2, num_gpus=0, cancel_grace_s=0.0)
    try:
        assert backend.local is not None and backend.local.running
        lines = _command_lines(_descendants(os.getpid()))
        assert any(b"gcs_server" in line for line in lines), lines  # looking where Ray runs
        assert any(b"raylet" in line for line in lines), lines
        assert not [line for line in lines if b"/monitor.py" in line]
        assert not [line for line in lines if b"dashboard/dashboard.py" in line]

        @ray.remote(max_retries=0)
        def square(x: int) -> int:
            return x * x

        assert ray.get([square.remote(i) for i in range(4)], timeout=60) == [0, 1, 4, 9]
    finally:
        backend.shutdown()
    assert not ray.is_initialized()
    assert not [line for line in _command_lines(_descendants(os.getpid())) if b"raylet" in line]
