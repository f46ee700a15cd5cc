"""Backfill, fair share, quotas and preemption, on plain lists (see test_scheduling.py for
what every policy shares)."""

from __future__ import annotations

import math
import random

import pytest

from nai_server.core.fairshare import Standing, accrue, decay, priorities
from nai_server.core.preempt import tier
from nai_server.core.sched_types import INF
from nai_server.core.scheduling import (
    POLICIES,
    Accounting,
    Cluster,
    GpuView,
    Plan,
    QueuedJob,
    QuotaLimit,
    RunningJob,
    Tuning,
    WaitReason,
    plan,
)

GiB = 1024**3
NOW = 1_000_000.0
HOUR = 3600
DAY = 86_400.0
# No window and no favour for width, length or age: orders and reservations as in
# EASY, so that the tests can work out the expected answer by hand.
PLAIN = Tuning(reserve_window=INF, weight_length=0, weight_width=0, weight_age=0, weight_qos=0)


def gpus(n: int) -> tuple[GpuView, ...]:
    return tuple(GpuView(i, f"GPU-{i}", 80 * GiB, 80 * GiB, False) for i in range(n))


def job(
    id: int,
    n: int = 1,
    *,
    limit: int | None = HOUR,
    user: str = "ada",
    group: str | None = None,
    at: float | None = None,
    **kw: object,
) -> QueuedJob:
    return QueuedJob(
        id=id,
        user=user,
        group=group,
        gpus=n,
        gpu_memory=None,
        submitted_at=NOW - 1000 + id if at is None else at,
        time_limit=limit,
        **kw,  # type: ignore[arg-type]
    )


def run(
    id: int,
    on: tuple[int, ...],
    *,
    ends_in: float | None,
    user: str = "bob",
    group: str | None = None,
    **kw: object,
) -> RunningJob:
    """A job on GPUs ``on``, started 10 minutes ago, whose time limit runs out
    ``ends_in`` seconds from NOW (None: it has no time limit)."""
    limit = None if ends_in is None else round(ends_in + 600)
    return RunningJob(id, user, group, on, NOW - 600, limit, **kw)  # type: ignore[arg-type]


def machine(n: int, *running: RunningJob) -> Cluster:
    return Cluster(gpus(n), tuple(running), cpu_slots=2)


def started(result: Plan) -> dict[int, tuple[int, ...]]:
    return {start.job_id: start.gpus for start in result.starts}


# --- backfill ------------------------------------------------------------------------


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


# --- starvation guard and drains -----------------------------------------------------


def test_an_outlier_that_has_waited_long_goes_first_but_a_long_backlog_keeps_its_order() -> None:
    short = [job(i, limit=HOUR, at=NOW - 60) for i in range(2, 7)]
    # Three days for a ten-hour job, among fresh one-hour jobs: it is starving.
    old = job(1, limit=10 * HOUR, at=NOW - 3 * DAY)
    assert started(plan([old, *short], machine(1), NOW, policy="fairshare")) == {1: (0,)}
    # The same wait where everyone has waited days is the backlog, not starvation:
    # short jobs first still lowers everyone's waiting.
    backlog = [job(i, limit=HOUR, at=NOW - 2.5 * DAY) for i in range(2, 7)]
    assert started(plan([old, *backlog], machine(1), NOW, policy="fairshare")) == {2: (0,)}
    # And with the guard off, the old job waits behind the fresh ones.
    off = Tuning(starve_factor=INF)
    result = plan([old, *short], machine(1), NOW, policy="fairshare", tuning=off)
    assert started(result) == {2: (0,)}


def test_a_starving_wide_job_goes_ahead_of_fresh_jobs_even_after_preemption() -> None:
    fresh = [job(i, limit=HOUR, preemptible=True) for i in range(2, 10)]
    # Preempted after ten hours on two of three GPUs: a late LAS tier, but starving.
    wide = job(1, 2, limit=20 * HOUR, at=NOW - 3 * DAY, attained=10 * HOUR, preemptible=True)
    result = plan([wide, *fresh], machine(3), NOW, policy="fairshare")
    assert started(result) == {1: (0, 1), 2: (2,)}
    # A narrow starving job keeps to its tier: fresh jobs (tier 0) go first.
    narrow = job(1, 1, limit=20 * HOUR, at=NOW - 3 * DAY, attained=20 * HOUR, preemptible=True)
    result = plan([narrow, *fresh], machine(3), NOW, policy="fairshare")
    assert started(result) == {2: (0,), 3: (1,), 4: (2,)}


def _busy(n: int) -> Cluster:
    """n GPUs, all but the last held for ten more hours (by their time limits)."""
    return machine(n, *(run(100 + i, (i,), ends_in=10 * HOUR) for i in range(n - 1)))


def test_the_machine_is_drained_for_a_whole_server_job_that_has_waited_long() -> None:
    two_hours, half_hour = job(2, limit=2 * HOUR), job(3, limit=1800)
    # Fresh, its reservation (ten hours off) is not worth GPU 3 idle: others fill it.
    whole = job(1, 4, limit=HOUR, at=NOW - 60)
    assert started(plan([whole, two_hours], _busy(4), NOW, policy="fairshare")) == {2: (3,)}
    # After twelve times its one-hour limit, only jobs no longer than it start.
    whole = job(1, 4, limit=HOUR, at=NOW - 13 * HOUR)
    result = plan([whole, two_hours], _busy(4), NOW, policy="fairshare")
    assert started(result) == {}
    assert result.waiting == {1: WaitReason.RESOURCES, 2: WaitReason.PRIORITY}
    assert result.est_start == {1: NOW + 10 * HOUR}
    result = plan([whole, half_hour], _busy(4), NOW, policy="fairshare")
    assert started(result) == {3: (3,)}
    # A drain that has not freed the machine within drain_hold gives up.
    whole = job(1, 4, limit=HOUR, at=NOW - 12 * HOUR - 19 * HOUR)
    assert started(plan([whole, two_hours], _busy(4), NOW, policy="fairshare")) == {2: (3,)}


def test_no_drain_for_a_job_that_leaves_a_gpu_free_or_for_other_policies() -> None:
    three = job(1, 3, limit=HOUR, at=NOW - 13 * HOUR)  # of four GPUs: not the whole server
    two_hours = job(2, limit=2 * HOUR)
    cluster = machine(4, *(run(100 + i, (i,), ends_in=10 * HOUR) for i in range(2)))
    # Both end long before GPUs 0 and 1 come back; a drain would let in only one.
    result = plan([three, two_hours, job(3, limit=2 * HOUR)], cluster, NOW, policy="fairshare")
    assert started(result) == {2: (2,), 3: (3,)}
    whole = job(1, 4, limit=HOUR, at=NOW - 13 * HOUR)
    # backfill keeps its plain EASY reservation: the two-hour job ends in time.
    assert started(plan([whole, two_hours], _busy(4), NOW, policy="backfill")) == {2: (3,)}


def test_an_empty_machine_goes_to_whole_server_jobs_first() -> None:
    queue = [job(1, 1, limit=HOUR), job(2, 2, limit=10 * HOUR)]
    # The one-hour job ranks first, but taking one GPU would end the rare moment when
    # both are free; the whole-server job starts, the other waits.
    result = plan(queue, machine(2), NOW, policy="fairshare")
    assert started(result) == {2: (0, 1)}
    # With a GPU busy anyway, the priority order holds.
    result = plan(queue, machine(2, run(7, (0,), ends_in=HOUR)), NOW, policy="fairshare")
    assert started(result) == {1: (1,)}
    # A whole-server job that was just preempted does not take back the machine it left
    # for a job ahead of it.
    left = job(2, 2, limit=10 * HOUR, user="bob", attained=600.0, preemptible=True)
    result = plan([job(1, user="ada"), left], machine(2), NOW, policy="fairshare",
                  accounting=SHARES)  # fmt: skip
    assert started(result) == {1: (0,)}


# --- fair share ----------------------------------------------------------------------


def test_decay_halves_usage_every_half_life() -> None:
    assert decay(1000.0, DAY, DAY) == pytest.approx(500.0)
    assert decay(1000.0, 3 * DAY, DAY) == pytest.approx(125.0)
    assert decay(1000.0, 0.0, DAY) == 1000.0


def test_accrue_does_not_depend_on_how_often_it_is_called() -> None:
    once = accrue(5000.0, 2, 7200.0, DAY)
    twice = accrue(accrue(5000.0, 2, 3600.0, DAY), 2, 3600.0, DAY)
    assert once == pytest.approx(twice)
    # Short intervals add about gpus x seconds; long ones approach gpus x mean life.
    assert accrue(0.0, 2, 60.0, DAY) == pytest.approx(120.0, rel=1e-3)
    assert accrue(0.0, 1, 100 * DAY, DAY) == pytest.approx(DAY / math.log(2))


def _priority(usage: dict[str, float], user: str) -> float:
    """The priority of a job of ``user`` queued beside an equal one of the other user."""
    queue = [job(1, user=user), job(2, user="light" if user == "heavy" else "heavy")]
    standing = Standing(Accounting(usage), ["heavy", "light"], [])
    return priorities(queue, standing, Tuning(), NOW, 8)[0]


def test_a_heavy_users_priority_falls_with_usage_and_recovers_with_decay() -> None:
    half_life = Tuning().half_life
    usage = {"user:heavy": 0.0, "user:light": 3600.0}
    levels = []
    for _ in range(4):  # heavy runs 8 GPUs for a day at a time
        usage["user:heavy"] = accrue(usage["user:heavy"], 8, DAY, half_life)
        usage["user:light"] = decay(usage["user:light"], DAY, half_life)
        levels.append(_priority(usage, "heavy"))
    assert levels == sorted(levels, reverse=True)
    assert levels[-1] < _priority(usage, "light")
    for _ in range(10):  # then stops, for ten weeks
        usage = {key: decay(value, 7 * DAY, half_life) for key, value in usage.items()}
        usage["user:light"] += 3600.0  # while light goes on using a little
    assert _priority(usage, "heavy") > levels[0]
    assert _priority(usage, "heavy") > _priority(usage, "light")


def test_the_under_share_user_starts_first() -> None:
    usage = Accounting({"user:heavy": 1e6, "user:light": 1e3})
    queue = [job(1, user="heavy"), job(2, user="light")]  # heavy's is older
    result = plan(queue, machine(1), NOW, policy="fairshare", accounting=usage)
    assert started(result) == {2: (0,)}
    assert result.waiting == {1: WaitReason.RESOURCES}


def test_shares_weigh_usage_and_groups_count_too() -> None:
    # Same usage, but "big" has three times the share: it is the one under its share.
    usage = Accounting(
        usage={"user:big": 5e5, "user:small": 5e5}, shares={"user:big": 3.0, "user:small": 1.0}
    )
    queue = [job(1, user="small"), job(2, user="big")]
    assert started(plan(queue, machine(1), NOW, policy="fairshare", accounting=usage)) == {2: (0,)}
    # Equal users, but one's group has used the machine a lot.
    groups = Accounting(usage={"group:busy": 1e6, "group:quiet": 1.0})
    queue = [job(1, user="a", group="busy"), job(2, user="b", group="quiet")]
    assert started(plan(queue, machine(1), NOW, policy="fairshare", accounting=groups)) == {2: (0,)}


def test_short_time_limits_and_age_order_the_queue() -> None:
    queue = [job(1, limit=10 * HOUR), job(2, limit=HOUR)]
    assert started(plan(queue, machine(1), NOW, policy="fairshare")) == {2: (0,)}
    # ... until the long one has waited long enough.
    queue = [job(1, limit=10 * HOUR, at=NOW - 60 * DAY), job(2, limit=HOUR)]
    assert started(plan(queue, machine(1), NOW, policy="fairshare")) == {1: (0,)}


def test_high_priority_goes_first() -> None:
    queue = [job(1), job(2, priority="high"), job(3, priority="low")]
    result = plan(queue, machine(1), NOW, policy="fairshare")
    assert started(result) == {2: (0,)}


# --- quotas --------------------------------------------------------------------------


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("key", ["user:ada", "group:lab"])
def test_quota_on_gpus_held_at_once(policy: str, key: str) -> None:
    cluster = machine(8, run(7, (0, 1), ends_in=900, user="ada", group="lab"))
    quotas = Accounting(quotas={key: QuotaLimit(max_gpus=4)})
    queue = [
        job(1, 2, group="lab"),  # 2 + 2 = 4: allowed
        job(2, 1, group="lab"),  # 5: over
        job(3, 1, user="bob"),  # not limited
    ]
    result = plan(queue, cluster, NOW, policy=policy, accounting=quotas)
    assert set(started(result)) == {1, 3}
    assert result.waiting == {2: WaitReason.QUOTA_GPUS}


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("key", ["user:ada", "group:lab"])
def test_quota_on_gpu_hours_per_period(policy: str, key: str) -> None:
    quotas = Accounting(quotas={key: QuotaLimit(gpu_hours=100.0)}, used_hours={key: 100.0})
    queue = [job(1, group="lab"), job(2, 0, group="lab"), job(3, user="bob")]
    result = plan(queue, machine(2), NOW, policy=policy, accounting=quotas)
    # A CPU job uses no GPU-hours; bob is not limited.
    assert set(started(result)) == {2, 3}
    assert result.waiting == {1: WaitReason.QUOTA_HOURS}
    below = Accounting(quotas={key: QuotaLimit(gpu_hours=100.0)}, used_hours={key: 99.0})
    assert 1 in started(plan(queue, machine(2), NOW, policy=policy, accounting=below))


def test_a_job_held_by_its_quota_does_not_hold_back_fifo() -> None:
    quotas = Accounting(quotas={"user:ada": QuotaLimit(max_gpus=1)})
    result = plan([job(1, 2), job(2, user="bob")], machine(2), NOW, accounting=quotas)
    assert started(result) == {2: (0,)}
    assert result.waiting == {1: WaitReason.QUOTA_GPUS}


# --- preemption ----------------------------------------------------------------------

SHARES = Accounting(usage={"user:bob": 1e6, "user:ada": 1e3})  # bob is over his share


def test_an_under_share_user_preempts_a_preemptible_job() -> None:
    cluster = machine(
        2,
        run(7, (0,), ends_in=9000, preemptible=True),
        run(8, (1,), ends_in=9000),  # not preemptible
    )
    result = plan([job(1, user="ada")], cluster, NOW, policy="fairshare", accounting=SHARES)
    assert result.preempt == (7,)
    assert started(result) == {1: (0,)}


def test_preemption_needs_the_job_ahead_to_rank_before_the_victim() -> None:
    cluster = machine(1, run(7, (0,), ends_in=9000, user="ada", preemptible=True))
    # bob is over his share and his job is as fresh as ada's: he waits.
    result = plan([job(1, user="bob")], cluster, NOW, policy="fairshare", accounting=SHARES)
    assert result.preempt == ()
    assert result.waiting == {1: WaitReason.RESOURCES}


def test_least_attained_service_first_among_preemptible_jobs() -> None:
    # One user: a job that has had two GPU-hours yields to a fresh one ...
    long = RunningJob(7, "ada", None, (0,), NOW - 7200, 99_999, preemptible=True)
    result = plan([job(1)], machine(1, long), NOW, policy="fairshare")
    assert result.preempt == (7,)
    # ... but not to one that has had as much service as itself.
    again = job(1, attained=7200.0, preemptible=True)
    assert plan([again], machine(1, long), NOW, policy="fairshare").preempt == ()
    assert tier(7200.0, Tuning()) == 1 and tier(0.0, Tuning()) == 0


def test_a_preempted_job_keeps_its_service_and_queues_behind_fresh_jobs() -> None:
    preempted = job(1, attained=3 * HOUR, preemptible=True, at=NOW - DAY)
    fresh = job(2, preemptible=True)
    result = plan([preempted, fresh], machine(1), NOW, policy="fairshare")
    assert started(result) == {2: (0,)}
    assert result.waiting == {1: WaitReason.RESOURCES}


def test_no_preemption_before_the_minimum_run_time() -> None:
    young = RunningJob(7, "bob", None, (0,), NOW - 60, 99_999, preemptible=True)
    tuning = Tuning(preempt_min_run=300.0)
    args = {"policy": "fairshare", "accounting": SHARES, "tuning": tuning}
    assert plan([job(1)], machine(1, young), NOW, **args).preempt == ()  # type: ignore[arg-type]
    later = plan([job(1)], machine(1, young), NOW + 240, **args)  # type: ignore[arg-type]
    assert later.preempt == (7,)


def test_jobs_already_stopping_are_waited_for_not_joined_by_more_victims() -> None:
    cluster = machine(
        2,
        run(7, (0,), ends_in=9000, stopping=True, preemptible=True),
        run(8, (1,), ends_in=9000, preemptible=True),
    )
    result = plan([job(1)], cluster, NOW, policy="fairshare", accounting=SHARES)
    assert result.preempt == ()
    assert result.waiting == {1: WaitReason.RESOURCES}
    assert result.est_start == {1: NOW}  # GPU 0 is kept for it


def test_preemption_takes_the_fewest_jobs_that_make_room() -> None:
    cluster = machine(
        4,
        run(7, (0,), ends_in=9000, preemptible=True),
        run(8, (1, 2, 3), ends_in=9000, preemptible=True),
    )
    result = plan([job(1, 3, user="ada")], cluster, NOW, policy="fairshare", accounting=SHARES)
    assert result.preempt == (8,)
    assert started(result) == {1: (1, 2, 3)}


def test_preemption_can_be_switched_off() -> None:
    cluster = machine(1, run(7, (0,), ends_in=9000, preemptible=True))
    off = Tuning(preempt=False)
    result = plan([job(1, user="ada")], cluster, NOW, policy="fairshare", accounting=SHARES,
                  tuning=off)  # fmt: skip
    assert result.preempt == ()


@pytest.mark.parametrize("policy", ["fifo", "firstfit", "backfill"])
def test_only_fairshare_preempts(policy: str) -> None:
    cluster = machine(1, run(7, (0,), ends_in=9000, preemptible=True))
    result = plan([job(1, user="ada")], cluster, NOW, policy=policy, accounting=SHARES)
    assert result.preempt == ()


# --- every policy --------------------------------------------------------------------


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_dependencies_hold_in_every_policy(policy: str) -> None:
    queue = [
        job(1, after=(50,)),  # unfinished
        job(2, after_ok=(51,)),  # failed: waits, the service cancels it
        job(3, after=(51,)),  # failed, but `after` only needs it finished
        job(4, after_ok=(52,)),  # succeeded
    ]
    result = plan(queue, machine(4), NOW, policy=policy, finished={51: False, 52: True})
    assert set(started(result)) == {3, 4}
    assert result.waiting == {1: WaitReason.DEPENDENCY, 2: WaitReason.DEPENDENCY}


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_reason_and_drain(policy: str) -> None:
    views = (*gpus(2), GpuView(2, "GPU-2", 80 * GiB, 10 * GiB, True))
    cluster = Cluster(views, (run(7, (0,), ends_in=900),), cpu_slots=0)
    quotas = Accounting(
        quotas={"user:q": QuotaLimit(max_gpus=0), "user:h": QuotaLimit(gpu_hours=1)},
        used_hours={"user:h": 2.0},
    )
    queue = [
        job(1, 1),
        job(2, 3, limit=60),
        job(3, 1, user="q"),
        job(4, 1, user="h"),
        job(5, 1, after=(99,)),
        job(6, 0),
    ]
    result = plan(queue, cluster, NOW, policy=policy, accounting=quotas, tuning=PLAIN)
    assert started(result) == {1: (1,)}
    assert result.waiting[2] in (WaitReason.RESOURCES, WaitReason.FOREIGN_USE)
    assert result.waiting[3] is WaitReason.QUOTA_GPUS
    assert result.waiting[4] is WaitReason.QUOTA_HOURS
    assert result.waiting[5] is WaitReason.DEPENDENCY
    assert result.waiting[6] is WaitReason.RESOURCES  # no CPU slots
    drained = Cluster(views, (), cpu_slots=2, drained=True)
    assert set(plan(queue, drained, NOW, policy=policy).waiting.values()) == {WaitReason.DRAINED}
