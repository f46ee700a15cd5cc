"""Preemption of preemptible jobs for jobs ahead of them (fair share only)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nai_server.core.preempt import tier
from nai_server.core.scheduling import (
    Cluster,
    Plan,
    QueuedJob,
    RunningJob,
    Tuning,
    WaitReason,
    plan,
)
from nai_server.core.what_if import estimate_start
from tests.unit.policy_kit import (
    DAY,
    HOUR,
    NOW,
    SHARES,
    GiB,
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


# --- what a preemption buys: its GPUs go to the job it was for ---------------------------
# bob is over his share. His preemptible job 7 has run 20 minutes (tier 0, as fresh as
# ada's jobs by service), so only ada's job may stop it. bob's short job 2 ranks ahead
# of ada's long job 1 (short jobs first), but it has no right to stop job 7.
VICTIM = RunningJob(7, "bob", None, (0,), NOW - 1200, None, preemptible=True)
ADA_LONG = job(1, user="ada", limit=10 * HOUR)
BOB_SHORT = job(2, user="bob", limit=600)


def fair(queue: list[QueuedJob], cluster: Cluster, at: float = NOW) -> Plan:
    return plan(queue, cluster, at, policy="fairshare", accounting=SHARES)


def test_the_gpus_a_preemption_frees_go_to_the_job_it_was_for() -> None:
    first = fair([ADA_LONG, BOB_SHORT], machine(1, VICTIM), NOW)
    assert first.preempt == (7,)
    assert started(first) == {1: (0,)}
    assert first.promised == {1: (0,)}
    # The next tick: job 7 is stopping (SIGTERM, grace period). bob's job still ranks
    # ahead; GPU 0 stays promised, and nobody else is stopped meanwhile.
    stopping = replace(machine(1, replace(VICTIM, stopping=True)), promised=first.promised)
    second = fair([ADA_LONG, BOB_SHORT], stopping, NOW + 10)
    assert (second.starts, second.preempt) == ((), ())
    assert second.waiting == {1: WaitReason.RESOURCES, 2: WaitReason.RESOURCES}
    assert second.promised == {1: (0,)}
    # Job 7 has let go and is queued again. GPU 0 is free: ada's job starts on it, not
    # bob's short job nor job 7 itself, which both rank ahead of it now.
    requeued = job(7, user="bob", limit=None, preemptible=True, attained=1210.0, at=NOW - 1300)
    free = replace(machine(1), promised=second.promised)
    third = fair([ADA_LONG, BOB_SHORT, requeued], free, NOW + 30)
    assert started(third) == {1: (0,)}
    assert third.promised == {}
    # Without the promise, the order alone would have given GPU 0 to bob.
    unpromised = fair([ADA_LONG, BOB_SHORT, requeued], machine(1), NOW + 30)
    assert 1 not in started(unpromised)


def test_free_gpus_of_a_start_that_waits_for_a_victim_are_kept_too() -> None:
    # ada's job needs GPUs 0 (job 7's) and 1 (free): while job 7 stops, bob's short
    # one-GPU job, which ranks ahead of hers, does not take GPU 1.
    wide = job(1, 2, user="ada", limit=10 * HOUR)
    bob_wide = job(2, 2, user="bob", limit=600)
    bob_narrow = job(3, user="bob", limit=600)
    first = fair([wide, bob_wide], machine(2, VICTIM), NOW)
    assert (first.preempt, started(first)) == ((7,), {1: (0, 1)})
    stopping = replace(machine(2, replace(VICTIM, stopping=True)), promised=first.promised)
    queue = [wide, bob_wide, bob_narrow]
    second = fair(queue, stopping, NOW + 10)
    assert second.starts == ()
    assert second.promised == {1: (0, 1)}
    third = fair(queue, replace(machine(2), promised=second.promised), NOW + 30)
    assert started(third) == {1: (0, 1)}


def test_a_promise_stands_while_the_victims_memory_still_shows_on_its_gpu() -> None:
    # The GPUs are probed before the victims are reaped in a tick: GPU 0 is free in the
    # daemon's records, but its memory reading still shows job 7's 79 GiB. ada's job,
    # which asks 10 GiB, still gets it, rather than bob's short job taking it.
    ada = replace(ADA_LONG, gpu_memory=10 * GiB)
    lagging = replace(machine(1), promised={1: (0,)})
    lagging = replace(lagging, gpus=(replace(lagging.gpus[0], memory_free=1 * GiB),))
    result = fair([ada, BOB_SHORT], lagging, NOW + 30)
    assert started(result) == {1: (0,)}


def test_a_promise_lapses_when_its_job_leaves_the_queue() -> None:
    # ada cancelled job 1 while job 7 stopped for it: the GPU goes by the order.
    free = replace(machine(1), promised={1: (0,)})
    result = fair([BOB_SHORT], free, NOW + 30)
    assert started(result) == {2: (0,)}
    assert result.promised == {}


def test_a_promise_lapses_when_another_job_holds_its_gpu() -> None:
    # GPU 0 went to something not stopping (a service replica, say): job 1 queues as any.
    taken = replace(machine(1, run(9, (0,), ends_in=9000)), promised={1: (0,)})
    result = fair([ADA_LONG], taken, NOW + 30)
    assert result.promised == {}
    assert result.waiting == {1: WaitReason.RESOURCES}


def test_gpus_promised_to_another_job_are_not_waited_for() -> None:
    # Job 7 stops for ada's job 1; ada's job 3 must not count on GPU 0 coming free, so
    # it stops bob's job 8 for itself rather than wait for a GPU it will not get.
    cluster = replace(
        machine(2, replace(VICTIM, stopping=True), run(8, (1,), ends_in=9000, preemptible=True)),
        promised={1: (0,)},
    )
    result = fair([ADA_LONG, job(3, user="ada")], cluster, NOW)
    assert result.preempt == (8,)
    assert started(result) == {3: (1,)}
    assert result.promised == {1: (0,), 3: (1,)}


def test_a_dry_run_estimate_expects_the_promise_to_be_kept() -> None:
    # While job 7 stops for ada's job, bob asks when another short job would start: not
    # on GPU 0 as job 7 lets go, but when her job's ten hours there are up.
    stopping = replace(machine(1, replace(VICTIM, stopping=True)), promised={1: (0,)})
    stopping = replace(stopping, gpus=(replace(stopping.gpus[0], held_by=7),))
    estimate = estimate_start(BOB_SHORT, [ADA_LONG], stopping, NOW + 10,
                              policy="fairshare", accounting=SHARES)
    assert estimate.at == NOW + 10 + 10 * HOUR
