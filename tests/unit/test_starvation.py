"""The starvation guard and drains: jobs that have waited long, and whole-server jobs."""

from __future__ import annotations

from nai_server.core.sched_types import INF
from nai_server.core.scheduling import (
    Cluster,
    Tuning,
    WaitReason,
    plan,
)
from tests.unit.policy_kit import (
    DAY,
    HOUR,
    NOW,
    SHARES,
    job,
    machine,
    run,
    started,
)


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
