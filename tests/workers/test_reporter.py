"""The worker's status reporter never makes training wait on the control plane."""

from __future__ import annotations

import time

import pytest
import ray

from fovea.workers.runtime import BoardReporter


@ray.remote
class SlowBoard:
    """A StatusBoard whose answers take `delay_s`: a busy control plane."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.events: list[str] = []
        self.progress: list[dict] = []
        self.cancel = False

    def push(
        self, job_id: str, progress: dict | None, events: list[dict], attempt: int = 0
    ) -> bool:
        time.sleep(self.delay_s)
        if progress is not None:
            self.progress.append(progress)
        self.events.extend(e["kind"] for e in events)
        return self.cancel

    def ask_cancel(self) -> None:
        self.cancel = True

    def seen(self) -> tuple[list[str], list[dict]]:
        return self.events, self.progress


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_pushes_never_block_and_nothing_is_lost(local_ray) -> None:
    board = SlowBoard.options(max_concurrency=1).remote(1.0)
    reporter = BoardReporter(job_id="j1", board=board, logger=None, interval_s=0.0)
    started = time.monotonic()
    for i in range(20):
        reporter.event(f"e{i}", "an event")
        reporter.progress(epoch=1, epochs=1, step=i + 1, steps=20, metrics={"loss": 1.0})
    # 40 pushes against a board that takes 1 s each: a blocking reporter would take 40 s.
    assert time.monotonic() - started < 2.0
    reporter.push(wait=True)
    reporter.push(wait=True)  # the final flush: whatever was queued behind the last push
    events, progress = ray.get(board.seen.remote())
    assert events == [f"e{i}" for i in range(20)]  # all of them, once each, in order
    assert progress[-1]["step"] == 20


def test_a_cancel_reaches_the_training_loop(local_ray) -> None:
    board = SlowBoard.remote(0.0)
    reporter = BoardReporter(job_id="j2", board=board, logger=None, interval_s=0.0)
    reporter.push(wait=True)
    assert not reporter.should_stop()
    ray.get(board.ask_cancel.remote())
    deadline = time.monotonic() + 10
    while not reporter.should_stop():
        assert time.monotonic() < deadline, "the cancel never reached the reporter"
        reporter.progress(epoch=1, epochs=1, step=1, steps=1, metrics={})
        time.sleep(0.05)
