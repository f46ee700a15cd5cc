"""What holds under every policy: quotas, dependencies, a reason for every waiting job."""

from __future__ import annotations

import pytest

from nai_server.core.scheduling import (
    POLICIES,
    Accounting,
    Cluster,
    GpuView,
    QuotaLimit,
    WaitReason,
    plan,
    quota_holds,
)
from tests.unit.policy_kit import (
    NOW,
    PLAIN,
    GiB,
    gpus,
    job,
    machine,
    run,
    started,
)


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


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("key", ["user:ada", "group:lab"])
def test_gpus_held_where_nai_does_not_place_count_against_quotas(policy: str, key: str) -> None:
    """A job or replica on Slurm's nodes holds GPUs by count, none of this host's: they
    are its user's and group's as placed ones are."""
    cluster = machine(8, run(7, (), ends_in=900, user="ada", group="lab", gpus_elsewhere=3))
    quotas = Accounting(quotas={key: QuotaLimit(max_gpus=4)})
    queue = [job(1, 2, group="lab"), job(2, 1, group="lab")]  # 3 + 2: over; 3 + 1: allowed
    result = plan(queue, cluster, NOW, policy=policy, accounting=quotas)
    assert set(started(result)) == {2}
    assert result.waiting == {1: WaitReason.QUOTA_GPUS}


@pytest.mark.parametrize("key", ["user:ada", "group:lab"])
def test_quota_holds_before_handing_jobs_to_a_scheduler_elsewhere(key: str) -> None:
    """On Slurm nai only decides what to hand over: a job over its owner's max_gpus,
    counting what is held or already handed over (3 here) and the jobs let through
    ahead of it, stays; one that fits, or another user's, goes."""
    held = [run(7, (), ends_in=900, user="ada", group="lab", gpus_elsewhere=3)]
    quotas = Accounting(quotas={key: QuotaLimit(max_gpus=6)})
    queue = [job(1, 2, group="lab"), job(2, 2, group="lab"), job(3, 1, group="lab"),
             job(4, 8, user="bob"), job(5, 0, group="lab")]
    # 3 + 2 = 5: goes; 5 + 2 = 7: over; 5 + 1 = 6: goes; bob: no quota; CPU: no GPUs.
    assert quota_holds(queue, held, quotas) == {2: WaitReason.QUOTA_GPUS}
    used_up = Accounting(quotas={key: QuotaLimit(gpu_hours=10.0)}, used_hours={key: 10.0})
    assert quota_holds(queue, held, used_up) == dict.fromkeys((1, 2, 3),
                                                               WaitReason.QUOTA_HOURS)
    assert quota_holds(queue, held, Accounting()) == {}


def test_a_job_held_by_its_quota_does_not_hold_back_fifo() -> None:
    quotas = Accounting(quotas={"user:ada": QuotaLimit(max_gpus=1)})
    result = plan([job(1, 2), job(2, user="bob")], machine(2), NOW, accounting=quotas)
    assert started(result) == {2: (0,)}
    assert result.waiting == {1: WaitReason.QUOTA_GPUS}


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
