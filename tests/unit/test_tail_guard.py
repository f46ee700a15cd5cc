"""The tail guard: a narrow job as long as the backlog's drain time is not left for last."""

from __future__ import annotations

import pytest

from nai_server.core.fairshare import drain_time
from nai_server.core.sched_types import Resources
from nai_server.core.scheduling import Cluster, Tuning, plan
from tests.unit.policy_kit import HOUR, NOW, job, machine, run, started

GUARD = Tuning(tail_guard=1.0)


def _busy(ends_in: float) -> Cluster:
    """Four GPUs, the first three held for ``ends_in`` more seconds (their limits)."""
    return machine(4, *(run(100 + i, (i,), ends_in=ends_in) for i in range(3)))


def test_drain_time_is_the_backlog_over_the_gpus() -> None:
    queue = [job(1, limit=100 * HOUR), job(2, 2, limit=HOUR), job(3, 0, limit=HOUR)]
    resources = Resources(_busy(10 * HOUR), NOW)
    # 3 GPUs x 10 h held, 100 h + 2 x 1 h queued (the CPU job takes no GPU), on 4 GPUs.
    assert drain_time(queue, resources, NOW) == pytest.approx((30 + 102) * HOUR / 4)


def test_a_job_longer_than_the_drain_time_goes_ahead_of_short_ones() -> None:
    long = job(1, limit=100 * HOUR)
    short = [job(i, limit=HOUR) for i in range(2, 6)]
    # Drain time (30 h + 104 h) / 4 = 33.5 h: the 100-hour job would end the busy period.
    result = plan([long, *short], _busy(10 * HOUR), NOW, policy="fairshare", tuning=GUARD)
    assert started(result) == {1: (3,)}
    # Off (the default), short jobs first.
    assert started(plan([long, *short], _busy(10 * HOUR), NOW, policy="fairshare")) == {2: (3,)}


def test_under_a_long_backlog_or_for_a_wide_job_short_jobs_stay_first() -> None:
    short = [job(i, limit=HOUR) for i in range(2, 6)]
    # Running jobs hold three GPUs for 200 more hours: drain time 176 h, past 100 h.
    long = job(1, limit=100 * HOUR)
    result = plan([long, *short], _busy(200 * HOUR), NOW, policy="fairshare", tuning=GUARD)
    assert started(result) == {2: (3,)}
    # A job asking for more than half the GPUs is the drains' business, not this guard's.
    wide = job(1, 3, limit=100 * HOUR)
    result = plan([wide, *short], machine(4), NOW, policy="fairshare", tuning=GUARD)
    assert set(started(result)) == {2, 3, 4, 5}
