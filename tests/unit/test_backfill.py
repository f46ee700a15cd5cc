"""EASY backfill: reservations for the head, and what may start around it."""

from __future__ import annotations

import random

import pytest

from nai_server.core.predict import estimate, expected_end
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
    # Not selective: the window alone decides (selective reservations would drop it too).
    tuning = Tuning(reserve_window=6 * HOUR, reserve_after=2 * DAY, reserve_slowdown=0)
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


@pytest.mark.parametrize("policy", ["backfill", "fairshare"])
def test_cpu_jobs_behind_the_head_start_when_every_gpu_is_taken(policy: str) -> None:
    """With no GPU left, GPU jobs behind the head wait for resources, but a CPU job
    still takes a free CPU slot."""
    cluster = machine(2, run(7, (0,), ends_in=10 * HOUR), run(8, (1,), ends_in=HOUR))
    queue = [job(1, 2, at=NOW - 3 * DAY), job(2, 1), job(3, 0), job(4, 1, limit=60)]
    result = plan(queue, cluster, NOW, policy=policy)
    assert started(result) == {3: ()}
    assert result.head == 1
    assert result.waiting == {
        1: WaitReason.RESOURCES, 2: WaitReason.RESOURCES, 4: WaitReason.RESOURCES,
    }  # fmt: skip


@pytest.mark.parametrize("predict", [False, True])
@pytest.mark.parametrize("seed", range(150))
def test_no_gpu_is_left_idle_while_a_job_that_fits_and_delays_nobody_waits(
    predict: bool, seed: int
) -> None:
    """Under the default fair share: a job that would fit on the GPUs left idle waits
    only if starting it there would move the head's earliest start later (by every
    length the policy counts on: limits, or predictions with ``predict``). Without a
    head, every job that fits starts. (Jobs waited under an hour: no drain, which idles
    GPUs on purpose, has begun.)"""
    rng = random.Random(seed)
    n = rng.randint(1, 8)
    users = ["ada", "bob", "cy"]
    running = [
        run(100 + index, (index,), ends_in=rng.choice([60, 600, 3600, rng.randint(0, 9000)]),
            user=rng.choice(users))
        for index in rng.sample(range(n), rng.randint(0, n))
    ]  # fmt: skip
    queue = [
        job(i, rng.randint(1, n), limit=rng.choice([60, 600, 3600, 4 * HOUR]),
            user=rng.choice(users), at=NOW - rng.uniform(0, HOUR))
        for i in range(1, rng.randint(2, 12))
    ]  # fmt: skip
    accounting = Accounting(
        usage={f"user:{u}": rng.uniform(0, 1e6) for u in users},
        runtimes={f"ratio:user:{u}": rng.uniform(0.05, 1.0) for u in ("ada", "bob")},
    )
    result = plan(queue, machine(n, *running), NOW, policy="fairshare",
                  accounting=accounting, tuning=Tuning(predict=predict))  # fmt: skip

    def length(user: str, limit: int) -> float:
        found = estimate(accounting.runtimes, user, limit) if predict else limit
        assert found is not None
        return found

    # When each GPU comes free, as the policy sees it once this pass's starts are made.
    free_at = [NOW] * n
    for r in running:
        assert r.time_limit is not None
        guess = length(r.user, r.time_limit)
        free_at[r.gpus[0]] = expected_end(r.started_at, guess, r.time_limit, NOW)
    by_id = {j.id: j for j in queue}
    for start in result.starts:
        begun = by_id[start.job_id]
        for index in start.gpus:
            free_at[index] = NOW + length(begun.user, begun.time_limit or 0)
    idle = [index for index in range(n) if free_at[index] == NOW]
    for waiting in queue:
        if waiting.id not in result.waiting or waiting.gpus > len(idle):
            continue
        assert result.head is not None, "a job that fits waits with no reservation to keep"
        assert result.waiting[waiting.id] is WaitReason.PRIORITY
        need = by_id[result.head].gpus
        if_started = list(free_at)
        end = NOW + length(waiting.user, waiting.time_limit or 0)
        for index in idle[: waiting.gpus]:
            if_started[index] = end
        assert _earliest(if_started, need) > _earliest(free_at, need), (
            f"job {waiting.id} would not delay head {result.head} but waits"
        )
