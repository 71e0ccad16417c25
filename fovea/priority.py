"""The control plane yields to training: Linux's SCHED_BATCH for everything but the work.

On a machine whose cores a job keeps busy (the embedded default on a laptop or a two-core
VM), every wakeup of a control-plane thread (Ray's gRPC pollers in the raylet, the GCS and
the job's own worker process, the API's event loop, the scheduler's tick) preempts a
training thread on the spot, far more often than in a bare PyTorch process. A SCHED_BATCH
thread keeps its full share of the CPU (its nice value still counts) but waits for the
running thread's time slice to end instead of preempting it (sched(7)), so the training
threads are preempted less (counts read from /proc: bench/RESULTS.md).

So Fovea's own processes (`fovea up`, `api`, `scheduler`, `dashboard`) and the daemons of
the local Ray (`starting_daemons`, so its workers too) run in SCHED_BATCH; the thread that
trains a job goes back to SCHED_OTHER (`doing_the_work`), and the threads and processes it
starts follow it (the intra-op pool, data loader workers), as does every thread of a model
replica (`serving_process`); the job's status pusher goes back to batch
(`yield_to_training` as its first call). MLflow's flush thread stays with the training
thread that starts it: it wakes once every two seconds, and in batch each of its calls
would wait for a training time slice, which the benchmark would count as MLflow's. Latency: a
control-plane thread that wakes while both cores train waits up to one time slice (a few
ms) for its turn. SCHED_IDLE was tried for the control plane instead and rejected: training
no faster, and `GET /jobs/{id}` far slower while a job trained (bench/RESULTS.md).

`FOVEA_CONTROL_PLANE_BATCH=0` turns it off. Elsewhere than on Linux all of this does nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

_BATCH = getattr(os, "SCHED_BATCH", None)
_OTHER = getattr(os, "SCHED_OTHER", None)


def enabled() -> bool:
    """On Linux, unless FOVEA_CONTROL_PLANE_BATCH is 0/false/no/off."""
    if _BATCH is None or not hasattr(os, "sched_setscheduler"):
        return False
    value = os.environ.get("FOVEA_CONTROL_PLANE_BATCH", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def policy(tid: int = 0) -> int | None:
    """The scheduling policy of a thread (0: the calling one); None where unknown."""
    try:
        return os.sched_getscheduler(tid)
    except (AttributeError, OSError):
        return None


def _set(policy: int | None, tid: int = 0) -> None:
    if policy is None:
        return
    # e.g. leaving SCHED_IDLE needs a privilege: the thread keeps what it has
    with contextlib.suppress(OSError):
        os.sched_setscheduler(tid, policy, os.sched_param(0))


def yield_to_training() -> None:
    """The calling thread, and what it starts from now on, in SCHED_BATCH (if enabled)."""
    if enabled():
        _set(_BATCH)


@contextlib.contextmanager
def _switched(*, from_: int | None, to: int | None) -> Iterator[None]:
    """The calling thread in `to` inside when it is in `from_` (anything else was chosen by
    someone else: left alone), its own policy back after."""
    if not enabled() or policy() != from_:
        yield
        return
    _set(to)
    try:
        yield
    finally:
        _set(from_)


def starting_daemons() -> contextlib.AbstractContextManager[None]:
    """Processes started inside (the local Ray's daemons, and the workers they start) run in
    SCHED_BATCH; the calling thread gets its own policy back after."""
    return _switched(from_=_OTHER, to=_BATCH)


def doing_the_work() -> contextlib.AbstractContextManager[None]:
    """Training: the calling thread in SCHED_OTHER inside, and what it starts meanwhile (the
    intra-op pool, data loader workers); its own policy back after. A thread Fovea did not
    put in batch (a Ray it did not start) is left as it is."""
    return _switched(from_=_BATCH, to=_OTHER)


def serving_process() -> None:
    """A model replica: every thread of this process in SCHED_OTHER (predictions are the
    work, whichever of the actor's threads runs them)."""
    if not enabled():
        return
    try:
        tids = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        if policy(tid) == _BATCH:
            _set(_OTHER, tid)
