"""The worker's status reporter never makes training wait on the control plane."""

from __future__ import annotations

import threading
import time

from fovea.workers.runtime import BoardReporter


class SlowBoard:
    """A board whose answers take `delay_s`: a busy control plane."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.events: list[str] = []
        self.progress: list[dict] = []
        self.cancel = False
        self.callers: set[str] = set()

    def push(
        self, job_id: str, progress: dict | None, events: list[dict], attempt: int = 0
    ) -> bool:
        self.callers.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        if progress is not None:
            self.progress.append(progress)
        self.events.extend(e["kind"] for e in events)
        return self.cancel


class DeadBoard:
    def push(self, *args: object) -> bool:
        raise ConnectionError("the GCS is away")


def test_pushes_never_block_and_nothing_is_lost() -> None:
    board = SlowBoard(1.0)
    reporter = BoardReporter(job_id="j1", board=board, logger=None, interval_s=0.0)
    started = time.monotonic()
    for i in range(20):
        reporter.event(f"e{i}", "an event")
        reporter.progress(epoch=1, epochs=1, step=i + 1, steps=20, metrics={"loss": 1.0})
    # 40 pushes against a board that takes 1 s each: a blocking reporter would take 40 s.
    assert time.monotonic() - started < 2.0
    reporter.push(wait=True)
    reporter.push(wait=True)  # the final flush: whatever was queued behind the last push
    assert board.events == [f"e{i}" for i in range(20)]  # all of them, once each, in order
    assert board.progress[-1]["step"] == 20
    assert threading.current_thread().name not in board.callers  # sent from its own thread


def test_a_cancel_reaches_the_training_loop() -> None:
    board = SlowBoard(0.0)
    reporter = BoardReporter(job_id="j2", board=board, logger=None, interval_s=0.0)
    reporter.push(wait=True)
    assert not reporter.should_stop()
    board.cancel = True
    deadline = time.monotonic() + 10
    while not reporter.should_stop():
        assert time.monotonic() < deadline, "the cancel never reached the reporter"
        reporter.progress(epoch=1, epochs=1, step=1, steps=1, metrics={})
        time.sleep(0.05)


def test_a_board_that_is_away_keeps_the_events_for_later() -> None:
    reporter = BoardReporter(job_id="j3", board=DeadBoard(), logger=None, interval_s=0.0)
    reporter.event("started", "first")
    reporter.push(wait=True)  # fails: training goes on, the events stay queued
    assert not reporter.should_stop()
    board = SlowBoard(0.0)
    reporter.board = board
    reporter.push(wait=True)
    assert board.events == ["started"]
