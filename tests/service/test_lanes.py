"""Lanes (host/lanes.py): work by key, in order per key, at most `per_key` at once, and
a key whose work is stuck holds up no other key."""

from __future__ import annotations

import threading

import pytest

from nai_server.host.lanes import Lanes


def test_a_stuck_key_holds_up_only_itself() -> None:
    lanes = Lanes(2, "test")
    gate = threading.Event()
    try:
        stuck = [lanes.submit("mallory", gate.wait, 30) for _ in range(3)]
        assert lanes.submit("alice", lambda: "done").result(timeout=10) == "done"
        assert not any(f.done() for f in stuck)
    finally:
        gate.set()
    assert all(f.result(timeout=10) for f in stuck)
    lanes.shutdown()


def test_one_keys_work_runs_in_order_per_key_at_most() -> None:
    lanes = Lanes(1, "test")
    seen: list[int] = []
    running = 0
    most = 0
    guard = threading.Lock()

    def work(n: int) -> int:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        seen.append(n)
        with guard:
            running -= 1
        return n * n

    futures = [lanes.submit("bob", work, n) for n in range(50)]
    assert [f.result(timeout=10) for f in futures] == [n * n for n in range(50)]
    assert seen == list(range(50)) and most == 1
    lanes.shutdown()
    with pytest.raises(RuntimeError):
        lanes.submit("bob", work, 1)


def test_errors_reach_the_future_and_shutdown_cancels_what_waits() -> None:
    lanes = Lanes(1, "test")
    gate = threading.Event()
    first = lanes.submit("a", gate.wait, 30)
    waiting = lanes.submit("a", lambda: 1)
    failing = lanes.submit("b", lambda: 1 // 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=10)
    gate.set()
    lanes.shutdown(wait=True, cancel_futures=True)
    assert first.result(timeout=10) is True
    assert waiting.cancelled() or waiting.result() == 1
    assert not lanes._threads
