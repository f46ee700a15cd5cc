"""The one backoff of the client's retry loops (push, pull, SSH session slots), with a
clock, a sleep and a random draw that the test drives."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from nai_server.protocol import ConnectionFailed, NaiError
from nai_tui.remote.backoff import TRANSFERS, Backoff, Policy
from nai_tui.remote.client import ServerClient
from nai_tui.sync.hashcache import HashCache
from nai_tui.sync.push import push


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _retries(backoff: Backoff, error: BaseException = ConnectionFailed("cut")) -> int:
    made = 0
    while backoff.pause(error):
        made += 1
        assert made < 1000
    return made


def test_delays_grow_by_the_factor_up_to_the_cap_for_the_allowed_retries() -> None:
    clock = Clock()
    backoff = Backoff(Policy(first=1.0, cap=5.0, retries=5), clock=clock, sleep=clock.sleep)
    assert _retries(backoff) == 5
    assert clock.slept == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_transfers_wait_1_2_4_seconds() -> None:
    clock = Clock()
    assert _retries(Backoff(TRANSFERS, clock=clock, sleep=clock.sleep)) == 3
    assert clock.slept == [1.0, 2.0, 4.0]


def test_no_retry_starts_past_the_deadline() -> None:
    clock = Clock()
    policy = Policy(first=0.01, cap=0.2, deadline=1.0)
    assert _retries(Backoff(policy, clock=clock, sleep=clock.sleep)) == 8
    assert clock.slept[:5] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16])
    assert sum(clock.slept) == pytest.approx(0.91)  # one more 0.2 would end past 1.0


def test_time_spent_trying_counts_against_the_deadline() -> None:
    clock = Clock()
    backoff = Backoff(Policy(first=1.0, cap=1.0, deadline=10.0), clock=clock,
                      sleep=clock.sleep)
    clock.now += 8.5  # the first try took its time
    assert backoff.pause(ConnectionFailed("cut"))
    assert not backoff.pause(ConnectionFailed("cut"))  # would start at 10.5


def test_only_the_named_errors_are_retried() -> None:
    clock = Clock()
    backoff = Backoff(Policy(first=1.0, cap=1.0, retries=3), clock=clock, sleep=clock.sleep)
    assert not backoff.pause(NaiError("refused"))
    assert not backoff.pause(KeyboardInterrupt())
    assert clock.slept == [] and backoff.retries == 0
    assert backoff.pause(ConnectionFailed("cut"))


def test_jitter_shortens_each_delay_by_at_most_its_fraction() -> None:
    clock = Clock()
    draws = iter([0.0, 1.0, 0.5])
    backoff = Backoff(Policy(first=1.0, cap=8.0, jitter=0.5, retries=3), clock=clock,
                      sleep=clock.sleep, rand=lambda: next(draws))
    assert _retries(backoff) == 3
    assert clock.slept == [1.0, 1.0, 3.0]  # 1 - 0, 2 * (1 - 0.5), 4 * (1 - 0.25)


def test_a_pause_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    backoff = Backoff(TRANSFERS, clock=clock, sleep=clock.sleep)
    with caplog.at_level("WARNING"):
        assert backoff.pause(ConnectionFailed("reset by peer"), "upload interrupted")
    assert "upload interrupted (reset by peer); resuming in 1 s" in caplog.text


def test_a_push_cut_with_no_retries_left_raises_the_cut(client: ServerClient, project: Path,
                                                        cache: HashCache) -> None:
    """An upload cut while files were hashed, with no retry allowed, used to end in an
    AssertionError ("unreachable"): it raises the connection error now, without waiting."""
    def always_cut(stream: Iterable[bytes]) -> Any:
        next(iter(stream))
        raise ConnectionFailed("connection reset by peer")

    client.upload_pack = always_cut  # type: ignore[method-assign]
    delays: list[float] = []
    with pytest.raises(ConnectionFailed, match="reset by peer"):
        push(client, project, cache=cache, retries=0, sleep=delays.append)
    assert delays == []
