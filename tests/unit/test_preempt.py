"""Preemption of preemptible jobs for jobs ahead of them (fair share only)."""

from __future__ import annotations

import pytest

from nai_server.core.preempt import tier
from nai_server.core.scheduling import (
    RunningJob,
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
