"""The status board in Ray's GCS: what workers push, the scheduler drains, once, in order;
cancels and newer attempts reach the workers. Against a real local Ray."""

from __future__ import annotations

import pickle

import pytest
import ray

from fovea.workers.board import KVBoard


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@ray.remote(num_cpus=0)
def _push_from_a_worker(board: KVBoard, job_id: str, n: int, attempt: int) -> list[bool]:
    answers = []
    for i in range(n):
        progress = {"step": i + 1}
        events = [{"kind": f"w{i}", "message": "", "data": {}}]
        answers.append(board.push(job_id, progress, events, attempt))
    return answers


def test_a_worker_pushes_and_the_scheduler_drains_once_in_order(local_ray) -> None:
    board = KVBoard(namespace="fovea-test-1")
    board.forget("a", attempt=0)
    assert ray.get(_push_from_a_worker.remote(board, "a", 5, 0)) == [False] * 5
    board.push("b", None, [{"kind": "only", "message": "", "data": {}}])
    drained = board.drain()
    assert [e["kind"] for e in drained["a"]["events"]] == [f"w{i}" for i in range(5)]
    assert drained["a"]["progress"] == {"step": 5}  # the latest only
    assert drained["b"] == {
        "progress": None,
        "events": [{"kind": "only", "message": "", "data": {}}],
    }
    assert board.drain() == {}  # handed out once


def test_a_cancel_and_a_newer_attempt_stop_the_worker(local_ray) -> None:
    board = KVBoard(namespace="fovea-test-2")
    board.forget("j", attempt=1)
    assert board.push("j", {"step": 1}, [], attempt=1) is False
    board.cancel("j")
    assert board.push("j", {"step": 2}, [], attempt=1) is True
    board.forget("j", attempt=2)  # the next attempt: cancel cleared, attempt 1 fenced off
    board.drain()
    assert ray.get(_push_from_a_worker.remote(board, "j", 1, 1)) == [True]
    assert board.drain() == {}  # what the stale attempt said is dropped
    assert board.push("j", {"step": 1}, [], attempt=2) is False
    board.forget("j", attempt=1)  # an older attempt never lowers the fence
    assert board.push("j", None, [], attempt=1) is True


def test_the_board_pickles_without_state() -> None:
    board = KVBoard(namespace="fovea-test-3")
    board._last_progress["x"] = "board/x/progress/1"
    copy = pickle.loads(pickle.dumps(board))
    assert copy.namespace == "fovea-test-3" and copy._last_progress == {}
