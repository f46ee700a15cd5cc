"""EASY backfill: reservations for the head, and what may start around it."""

from __future__ import annotations

import random

import pytest

from nai_server.core.predict import estimate
from nai_server.core.sched_types import INF
from nai_server.core.scheduling import (
    Accounting,
    Tuning,
    WaitReason,
    plan,
)
from tests.unit.policy_kit import (
    DAY,
    HOUR,
    NOW,
    PLAIN,
    job,
    machine,
    run,
    started,
)


def test_backfill_reserves_for_the_head_and_fills_around_it() -> None:
    cluster = machine(2, run(7, (0,), ends_in=900))
    queue = [
        job(1, 2),  # the head: both GPUs, the second when job 7's limit runs out
        job(2, 1, limit=500),  # ends before then: starts now
        job(3, 1, limit=2 * HOUR),  # would hold GPU 1 past the reservation
        job(4, 1, limit=None),  # no limit: might run for ever
    ]
    result = plan(queue, cluster, NOW, policy="backfill")
    assert started(result) == {2: (1,)}
    assert result.est_start == {1: NOW + 900}
    assert result.waiting == {
        1: WaitReason.RESOURCES,
        3: WaitReason.RESOURCES,  # GPU 1 went to job 2
        4: WaitReason.RESOURCES,
    }


def test_backfill_says_priority_for_a_job_that_fits_but_would_delay_the_head() -> None:
    cluster = machine(3, run(7, (0,), ends_in=900))
    result = plan([job(1, 3), job(2, 1, limit=2 * HOUR)], cluster, NOW, policy="backfill")
    assert started(result) == {}
    assert result.waiting == {1: WaitReason.RESOURCES, 2: WaitReason.PRIORITY}


def test_jobs_without_a_limit_use_only_what_the_head_does_not_need() -> None:
    # GPUs 0 and 1 come back in 900 s; the head needs 3 of 4, so one GPU is spare.
    cluster = machine(4, run(7, (0,), ends_in=900), run(8, (1,), ends_in=900))
    queue = [job(1, 3), job(2, 1, limit=None), job(3, 1, limit=None)]
    result = plan(queue, cluster, NOW, policy="backfill")
    assert started(result) == {2: (2,)}
    assert result.waiting[3] is WaitReason.PRIORITY
    assert result.est_start == {1: NOW + 900}


def test_a_head_waiting_on_a_job_without_a_limit_has_no_estimate() -> None:
    cluster = machine(2, run(7, (0,), ends_in=None))
    result = plan([job(1, 2), job(2, 1, limit=60)], cluster, NOW, policy="backfill")
    # Nobody knows when job 7 ends, so nothing may take a GPU the head needs.
    assert result.est_start == {}
    assert result.waiting == {1: WaitReason.RESOURCES, 2: WaitReason.PRIORITY}


def test_a_job_that_can_never_fit_holds_back_nobody() -> None:
    result = plan([job(1, 9), job(2, 1, limit=None)], machine(8), NOW, policy="backfill")
    assert started(result) == {2: (0,)}
    assert result.waiting == {1: WaitReason.RESOURCES}
    assert result.est_start == {}


def _earliest(free_at: list[float], need: int) -> float:
    return sorted(free_at)[need - 1]


@pytest.mark.parametrize("policy", ["backfill", "fairshare"])
@pytest.mark.parametrize("seed", range(300))
def test_backfill_never_delays_the_heads_reservation(policy: str, seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 8)
    running = [
        run(100 + index, (index,), ends_in=rng.choice([None, 60, 600, 3600, rng.randint(0, 9000)]))
        for index in rng.sample(range(n), rng.randint(0, n))
    ]
    free_at = {
        r.gpus[0]: INF if r.time_limit is None else max(NOW, r.started_at + r.time_limit)
        for r in running
    }
    queue = [
        job(
            i,
            rng.randint(1, n),
            limit=rng.choice([None, 60, 600, 3600, 4 * HOUR, rng.randint(1, 10_000)]),
            user=rng.choice(["ada", "bob", "cy"]),
        )
        for i in range(1, rng.randint(1, 12))
    ]
    usage = {f"user:{u}": rng.uniform(0, 1e6) for u in ("ada", "bob", "cy")}
    result = plan(
        queue, machine(n, *running), NOW, policy=policy, accounting=Accounting(usage), tuning=PLAIN
    )
    by_id = {j.id: j for j in queue}
    after = [free_at.get(i, NOW) for i in range(n)]
    for start in result.starts:
        limit = by_id[start.job_id].time_limit
        for index in start.gpus:
            assert index not in free_at, "started on a busy GPU"
            free_at[index] = after[index] = INF if limit is None else NOW + limit
    for head, at in result.est_start.items():
        # Once everything this pass started is counted, the head still fits by then.
        assert _earliest(after, by_id[head].gpus) <= at


def test_fairshare_reserves_only_within_its_window_until_a_job_has_waited() -> None:
    cluster = machine(2, run(7, (0,), ends_in=10 * HOUR))
    queue = [job(1, 2, limit=60), job(2, 1, limit=None)]
    tuning = Tuning(reserve_window=6 * HOUR, reserve_after=2 * DAY)
    # Ten hours off: holding GPU 1 idle that long for a guess is not worth it.
    result = plan(queue, cluster, NOW, policy="fairshare", tuning=tuning)
    assert started(result) == {2: (1,)}
    assert result.est_start == {}
    # The same job after two days' wait gets its reservation, whatever it costs.
    old = [job(1, 2, limit=60, at=NOW - 2 * DAY), job(2, 1, limit=None)]
    result = plan(old, cluster, NOW, policy="fairshare", tuning=tuning)
    assert started(result) == {}
    assert result.est_start == {1: NOW + 10 * HOUR}
    assert result.waiting == {1: WaitReason.RESOURCES, 2: WaitReason.PRIORITY}


@pytest.mark.parametrize("predict", [False, True])
@pytest.mark.parametrize("seed", range(150))
def test_no_gpu_is_left_idle_while_a_job_that_fits_and_delays_nobody_waits(
    predict: bool, seed: int
) -> None:
    """Under the default fair share: any job that would fit on the GPUs left idle waits
    only because it is behind the head and would still run at the head's reservation.
    (Jobs waited under an hour: no drain, which idles GPUs on purpose, has begun.)"""
    rng = random.Random(seed)
    n = rng.randint(1, 8)
    running = [
        run(100 + index, (index,), ends_in=rng.choice([60, 600, 3600, rng.randint(0, 9000)]),
            user=rng.choice(["ada", "bob", "cy"]))
        for index in rng.sample(range(n), rng.randint(0, n))
    ]  # fmt: skip
    queue = [
        job(i, rng.randint(1, n), limit=rng.choice([60, 600, 3600, 4 * HOUR]),
            user=rng.choice(["ada", "bob", "cy"]), at=NOW - rng.uniform(0, HOUR))
        for i in range(1, rng.randint(2, 12))
    ]  # fmt: skip
    accounting = Accounting(
        usage={f"user:{u}": rng.uniform(0, 1e6) for u in ("ada", "bob", "cy")},
        runtimes={f"ratio:user:{u}": rng.uniform(0.05, 1.0) for u in ("ada", "bob")},
    )
    tuning = Tuning(predict=predict)
    result = plan(queue, machine(n, *running), NOW, policy="fairshare",
                  accounting=accounting, tuning=tuning)  # fmt: skip
    idle = n - len(running) - sum(len(start.gpus) for start in result.starts)
    heads = list(result.est_start.values())
    for waiting in queue:
        if waiting.id in result.waiting and waiting.gpus <= idle:
            assert result.waiting[waiting.id] is WaitReason.PRIORITY
            assert len(heads) == 1, "a job that fits waits with no reservation to keep"
            # By its own (limit or predicted) length it would still run at the reservation.
            limit = waiting.time_limit
            assert limit is not None
            length = estimate(accounting.runtimes, waiting.user, limit) if predict else limit
            assert length is not None
            assert NOW + length > heads[0]
