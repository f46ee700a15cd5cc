"""Fair share: decayed usage against shares, and the multifactor order."""

from __future__ import annotations

import math

import pytest

from nai_server.core.fairshare import Standing, accrue, decay, priorities
from nai_server.core.scheduling import (
    Accounting,
    QueuedJob,
    QuotaLimit,
    Tuning,
    WaitReason,
    plan,
)
from tests.unit.policy_kit import (
    DAY,
    HOUR,
    NOW,
    job,
    machine,
    run,
    started,
)


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


def test_wider_jobs_go_ahead_of_narrower_ones_of_the_same_length() -> None:
    """Width: a job asking for more of the machine needs more GPUs free at once, so it
    goes first among equals (not on an empty machine only, where whole-server jobs go
    first anyway: here one GPU is busy and neither job asks for all four)."""
    cluster = machine(4, run(9, (3,), ends_in=10 * HOUR))
    queue = [job(1, 1), job(2, 3)]  # job 1 came first
    assert started(plan(queue, cluster, NOW, policy="fairshare")) == {2: (0, 1, 2)}
    flat = Tuning(weight_width=0.0)
    assert started(plan(queue, cluster, NOW, policy="fairshare", tuning=flat)) == {1: (0,)}


def _behind(narrow: int) -> list[QueuedJob]:
    """``narrow`` one-GPU one-hour jobs, then a four-GPU ten-hour one (last in the order:
    short limits come first)."""
    return [*(job(i, 1, limit=HOUR) for i in range(1, narrow + 1)), job(99, 4, limit=10 * HOUR)]


def test_on_an_empty_machine_a_whole_server_job_near_the_top_goes_first() -> None:
    """Third in the order: it starts now rather than waiting for a drain later, and the
    two jobs ahead of it wait for one job's run."""
    result = plan(_behind(2), machine(4), NOW, policy="fairshare")
    assert started(result) == {99: (0, 1, 2, 3)}


def test_a_whole_server_job_deep_in_the_order_does_not_jump_an_empty_machine() -> None:
    """Fourth: the jobs ahead of it start. Were every whole-server job to go first, a
    stream of them, each emptying the machine as it ends, would hold every narrower job
    back until the last one had run."""
    assert started(plan(_behind(3), machine(4), NOW, policy="fairshare")) == {
        1: (0,),
        2: (1,),
        3: (2,),
    }
    anywhere = Tuning(whole_first_rank=math.inf)
    result = plan(_behind(3), machine(4), NOW, policy="fairshare", tuning=anywhere)
    assert started(result) == {99: (0, 1, 2, 3)}
    never = Tuning(whole_first_rank=0)
    assert set(started(plan(_behind(1), machine(4), NOW, policy="fairshare", tuning=never))) == {1}


def test_jobs_their_quota_holds_back_do_not_count_as_ahead_of_a_whole_server_job() -> None:
    """Three jobs ahead, but two are a user's over their GPU quota: the whole-server job
    is second among those that can start, and the machine is empty, so it goes first."""
    queue = [job(1, 1, limit=HOUR, user="cy"), job(2, 1, limit=HOUR, user="cy"),
             job(3, 1, limit=HOUR), job(99, 4, limit=10 * HOUR)]  # fmt: skip
    capped = Accounting(quotas={"user:cy": QuotaLimit(max_gpus=0)})
    result = plan(queue, machine(4), NOW, policy="fairshare", accounting=capped)
    assert started(result) == {99: (0, 1, 2, 3)}
    assert set(started(plan(queue, machine(4), NOW, policy="fairshare"))) == {1, 2, 3}
