"""The control plane yields to training (fovea.priority): Fovea's and the local Ray's threads
in SCHED_BATCH, the thread that trains (and what it starts) in SCHED_OTHER. Read back from
the kernel, for real threads, real processes and a job on a real local Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fovea import priority
from fovea.workers.backend import Handle, RayBackend
from fovea.workers.types import WorkerJob
from tests.support.specs import digits_spec, worker_job

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux policies")

BATCH, OTHER = getattr(os, "SCHED_BATCH", 3), getattr(os, "SCHED_OTHER", 0)
TICKS = os.sysconf("SC_CLK_TCK")
# a child's own policy and every thread's, once one more thread has started
PRINT_POLICIES = (
    "import os, threading, time\n"
    "from fovea import priority\n"
    "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
    "{before}\n"
    "print(sorted({{os.sched_getscheduler(int(t)) for t in os.listdir('/proc/self/task')}}))\n"
)


def in_new_thread(fn: Callable[[], Any]) -> Any:
    """`fn`'s result, run on a new thread (a policy set there stays there)."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(30)
    return out[0]


def child_policies(before: str = "pass") -> list[int]:
    """The policies of a new Python process's threads."""
    code = PRINT_POLICIES.format(before=before)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return eval(out.stdout.strip())  # a list of ints printed by the child


def test_the_control_plane_and_what_it_starts_yield_and_the_work_does_not(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("FOVEA_CONTROL_PLANE_BATCH", raising=False)

    def control_plane() -> dict[str, Any]:
        priority.yield_to_training()
        seen: dict[str, Any] = {
            "self": os.sched_getscheduler(0),
            "its thread": in_new_thread(lambda: os.sched_getscheduler(0)),
            "its process": child_policies(),
        }
        with priority.doing_the_work():
            seen["training"] = os.sched_getscheduler(0)
            seen["the pool it starts"] = in_new_thread(lambda: os.sched_getscheduler(0))
            seen["its data workers"] = child_policies()
            # the status pusher starts here but yields again
            seen["its helpers"] = in_new_thread(
                lambda: (priority.yield_to_training(), os.sched_getscheduler(0))[1]
            )
        seen["after"] = os.sched_getscheduler(0)
        return seen

    assert in_new_thread(control_plane) == {
        "self": BATCH,
        "its thread": BATCH,
        "its process": [BATCH],
        "training": OTHER,
        "the pool it starts": OTHER,
        "its data workers": [OTHER],
        "its helpers": BATCH,
        "after": BATCH,
    }
    assert os.sched_getscheduler(0) == OTHER  # the caller's own thread was never touched


def test_daemons_start_in_batch_and_a_replica_takes_every_thread_back(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("FOVEA_CONTROL_PLANE_BATCH", raising=False)

    def start_daemons() -> tuple[list[int], list[int], int]:
        with priority.starting_daemons():
            daemon = child_policies()
            replica = child_policies("priority.serving_process()")
        return daemon, replica, os.sched_getscheduler(0)

    daemon, replica, after = in_new_thread(start_daemons)
    assert daemon == [BATCH]
    assert replica == [OTHER]  # the replica's threads, the one started before included
    assert after == OTHER  # the thread that started them has its own policy back


def test_it_can_be_turned_off(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FOVEA_CONTROL_PLANE_BATCH", "0")

    def control_plane() -> tuple[int, list[int]]:
        priority.yield_to_training()
        with priority.starting_daemons():
            return os.sched_getscheduler(0), child_policies()

    assert in_new_thread(control_plane) == (OTHER, [OTHER])


# -- a job on the real local Ray -------------------------------------------------------


def thread_cpu(pid: int) -> dict[int, tuple[int, float]]:
    """tid -> (policy, CPU seconds) of a live process's threads."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # stat fields after the name: utime, stime at 12-13 (1-based 14-15), policy at 39 (41)
        out[int(task.name)] = (int(fields[38]), (int(fields[11]) + int(fields[12])) / TICKS)
    return out


def pids(where: str, match: Callable[[bytes], bool]) -> list[int]:
    """Processes whose /proc/<pid>/`where` (comm, cmdline) matches."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and match((entry / where).read_bytes()):
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def digits_job(home: Path, name: str) -> WorkerJob:
    spec = digits_spec(
        name=name,
        train={"epochs": 30, "batch_size": 64, "image_size": 32, "seed": 0},
        resources={"cpus": 2},
        register_as=None,
    )
    return worker_job(home, spec, experiment="priority-tests")


@pytest.mark.slow
def test_a_job_trains_at_the_normal_policy_while_the_local_ray_yields(tmp_path: Path) -> None:
    import ray

    ray.shutdown()  # a Ray another test module left up was not started by Fovea
    backend = RayBackend(num_cpus=2, num_gpus=0, cancel_grace_s=5.0)
    try:
        # this Ray's daemons (children of this process), not another cluster's on the machine
        daemons = [
            pid
            for pid in pids("comm", lambda comm: comm.strip() in (b"raylet", b"gcs_server"))
            if parent(pid) == os.getpid()
        ]
        assert len(daemons) >= 2, daemons
        for pid in daemons:
            assert {policy for policy, _ in thread_cpu(pid).values()} == {BATCH}, pid
        assert os.sched_getscheduler(0) == OTHER  # the process that started Ray is as it was

        job = digits_job(tmp_path, "prio")
        handle: Handle = backend.submit(job)
        title = f"ray::fovea-job-{job.job_id}".encode()  # the worker's process title
        deadline = time.monotonic() + 180
        busy: dict[int, int] = {}
        while not busy and time.monotonic() < deadline:
            progress = backend.drain_status().get(job.job_id, {}).get("progress") or {}
            assert backend.poll(handle) is None, "the job ended before it was seen training"
            if progress.get("step", 0) > 0:  # training: what does each thread do for 2 s
                named = pids("cmdline", lambda cmdline: cmdline.startswith(title))
                (pid,) = [p for p in named if parent(p) not in named]  # not its data workers
                before = thread_cpu(pid)
                time.sleep(2.0)
                after = thread_cpu(pid)
                busy = {
                    tid: policy
                    for tid, (policy, cpu) in after.items()
                    if tid in before and cpu - before[tid][1] > 0.5  # > 25% of a core
                }
                idle = {policy for tid, (policy, cpu) in after.items() if tid not in busy}
            time.sleep(0.2)
        assert busy, "no training thread seen"
        # the training threads (the task's and its intra-op pool's) at the normal policy;
        # Ray's own threads in the same process (gRPC pollers, its I/O thread) yield
        assert set(busy.values()) == {OTHER}, busy
        assert BATCH in idle
        backend.cancel(handle)
    finally:
        backend.shutdown()
