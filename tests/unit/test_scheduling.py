from __future__ import annotations

import pytest

from nai_server.core.scheduling import (
    POLICIES,
    Cluster,
    GpuView,
    Plan,
    QueuedJob,
    RunningJob,
    Start,
    WaitReason,
    plan,
)

GiB = 1024**3
NOW = 1_000_000.0


def gpu(
    index: int, *, free: int = 80 * GiB, foreign: bool = False, held_by: int | None = None
) -> GpuView:
    return GpuView(index, f"GPU-{index:04d}", 80 * GiB, free, foreign, held_by)


def job(
    id: int, gpus: int = 1, *, mem: int | None = None, at: float | None = None, **kw: object
) -> QueuedJob:
    return QueuedJob(
        id=id,
        user="ada",
        group=None,
        gpus=gpus,
        gpu_memory=mem,
        submitted_at=NOW - 1000 + id if at is None else at,
        time_limit=None,
        **kw,  # type: ignore[arg-type]
    )


def cluster(
    n_gpus: int = 2,
    *,
    gpus: tuple[GpuView, ...] | None = None,
    running: tuple[RunningJob, ...] = (),
    cpu_slots: int = 4,
    drained: bool = False,
) -> Cluster:
    views = gpus if gpus is not None else tuple(gpu(i) for i in range(n_gpus))
    return Cluster(views, running, cpu_slots, drained)


def started(result: Plan) -> dict[int, tuple[int, ...]]:
    return {start.job_id: start.gpus for start in result.starts}


def test_three_one_gpu_jobs_on_two_gpus() -> None:
    result = plan([job(1), job(2), job(3)], cluster(2), NOW)
    assert result.starts == (Start(1, (0,)), Start(2, (1,)))
    assert result.waiting == {3: WaitReason.RESOURCES}


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_queued_job_starts_or_has_a_reason(policy: str) -> None:
    queue = [job(i, gpus=i % 3, mem=(i % 2) * 40 * GiB or None) for i in range(1, 40)]
    queue.append(job(99, after=(12345,)))
    result = plan(queue, cluster(4, cpu_slots=2), NOW, policy=policy)
    ids = [start.job_id for start in result.starts] + list(result.waiting)
    assert sorted(ids) == sorted(j.id for j in queue)


def test_multi_gpu_job_gets_distinct_lowest_free_gpus() -> None:
    views = (gpu(0, held_by=7), gpu(1), gpu(2), gpu(3))
    running = (RunningJob(7, "bob", None, (0,), NOW - 60, None),)
    result = plan([job(1, gpus=2)], cluster(gpus=views, running=running), NOW)
    assert started(result) == {1: (1, 2)}


def test_gpus_of_running_jobs_count_as_held_even_if_nvml_lags() -> None:
    running = (RunningJob(7, "bob", None, (0,), NOW - 1, None),)
    result = plan([job(1), job(2)], cluster(2, running=running), NOW)
    assert started(result) == {1: (1,)}
    assert result.waiting == {2: WaitReason.RESOURCES}


def test_gpu_order_in_the_view_does_not_matter() -> None:
    views = (gpu(3), gpu(1), gpu(2), gpu(0))
    assert started(plan([job(1, gpus=3)], cluster(gpus=views), NOW)) == {1: (0, 1, 2)}


def test_foreign_gpu_is_not_handed_out_without_gpu_memory() -> None:
    views = (gpu(0, foreign=True, free=70 * GiB), gpu(1, held_by=5))
    result = plan([job(1)], cluster(gpus=views), NOW)
    assert result.starts == ()
    assert result.waiting == {1: WaitReason.FOREIGN_USE}


def test_foreign_gpu_is_shared_when_its_free_memory_fits() -> None:
    views = (gpu(0, foreign=True, free=30 * GiB), gpu(1, foreign=True, free=10 * GiB))
    result = plan([job(1, mem=20 * GiB), job(2, mem=20 * GiB)], cluster(gpus=views), NOW)
    assert started(result) == {1: (0,)}
    # GPU 1 has too little free, but would have enough without the foreign process.
    assert result.waiting == {2: WaitReason.FOREIGN_USE}


def test_foreign_use_only_when_foreign_processes_are_the_whole_obstacle() -> None:
    views = (gpu(0, foreign=True), gpu(1, held_by=5))
    result = plan([job(1), job(2, gpus=2)], cluster(gpus=views), NOW, policy="firstfit")
    assert result.waiting == {1: WaitReason.FOREIGN_USE, 2: WaitReason.RESOURCES}


def test_gpu_memory_constraint_on_own_gpus() -> None:
    views = (gpu(0, free=8 * GiB), gpu(1, free=60 * GiB))
    result = plan([job(1, mem=40 * GiB), job(2, mem=40 * GiB)], cluster(gpus=views), NOW)
    assert started(result) == {1: (1,)}
    assert result.waiting == {2: WaitReason.RESOURCES}


def test_job_larger_than_the_machine_waits_with_resources() -> None:
    result = plan([job(1, gpus=9)], cluster(8), NOW)
    assert result.waiting == {1: WaitReason.RESOURCES}
    result = plan([job(1, mem=100 * GiB)], cluster(2), NOW)
    assert result.waiting == {1: WaitReason.RESOURCES}


def test_fifo_head_blocks_the_rest_with_priority() -> None:
    queue = [job(1), job(2, gpus=2), job(3), job(4, gpus=0), job(5, gpus=5)]
    result = plan(queue, cluster(2), NOW, policy="fifo")
    assert started(result) == {1: (0,)}
    assert result.waiting == {
        2: WaitReason.RESOURCES,  # the head that does not fit
        3: WaitReason.PRIORITY,  # would fit on GPU 1, but 2 is ahead
        4: WaitReason.PRIORITY,  # CPU slot free, but strict order
        5: WaitReason.RESOURCES,  # would not fit anyway
    }


def test_fifo_is_the_default() -> None:
    queue = [job(1, gpus=3), job(2)]
    assert plan(queue, cluster(2), NOW).waiting == {
        1: WaitReason.RESOURCES,
        2: WaitReason.PRIORITY,
    }


def test_firstfit_starts_the_small_job_past_the_big_one() -> None:
    queue = [job(1), job(2, gpus=2), job(3)]
    result = plan(queue, cluster(2), NOW, policy="firstfit")
    assert started(result) == {1: (0,), 3: (1,)}
    assert result.waiting == {2: WaitReason.RESOURCES}


def test_order_is_submission_time_then_id_not_list_order() -> None:
    queue = [job(3, at=5.0), job(2, at=5.0), job(1, at=9.0)]
    result = plan(queue, cluster(2), NOW)
    assert result.starts == (Start(2, (0,)), Start(3, (1,)))
    assert result.waiting == {1: WaitReason.RESOURCES}


def test_drained_starts_nothing() -> None:
    queue = [job(1), job(2, gpus=0), job(3, after=(1,))]
    result = plan(queue, cluster(2, drained=True), NOW)
    assert result.starts == ()
    assert result.waiting == dict.fromkeys((1, 2, 3), WaitReason.DRAINED)


def test_dependencies() -> None:
    queue = [
        job(10, after=(1,)),  # 1 failed: `after` only needs it finished
        job(11, after_ok=(1,)),  # 1 failed: waits; cancelling it is the service's call
        job(12, after_ok=(2,)),  # 2 succeeded
        job(13, after=(3,)),  # 3 unknown or still running
        job(14, after=(2,), after_ok=(3,)),
    ]
    result = plan(queue, cluster(4), NOW, finished={1: False, 2: True})
    assert started(result) == {10: (0,), 12: (1,)}
    assert result.waiting == dict.fromkeys((11, 13, 14), WaitReason.DEPENDENCY)


def test_dependency_waiters_do_not_block_fifo() -> None:
    result = plan([job(1, after=(99,)), job(2)], cluster(1), NOW)
    assert started(result) == {2: (0,)}
    assert result.waiting == {1: WaitReason.DEPENDENCY}


def test_cpu_jobs_use_cpu_slots() -> None:
    running = (
        RunningJob(7, "bob", None, (), NOW - 5, None),
        RunningJob(8, "bob", None, (0,), NOW - 5, None),
    )
    queue = [job(1, gpus=0), job(2, gpus=0), job(3, gpus=0, mem=GiB)]
    result = plan(queue, cluster(1, running=running, cpu_slots=3), NOW, policy="firstfit")
    assert result.starts == (Start(1, ()), Start(2, ()))
    assert result.waiting == {3: WaitReason.RESOURCES}


def test_cpu_jobs_do_not_need_gpus() -> None:
    views = (gpu(0, held_by=5),)
    result = plan([job(1), job(2, gpus=0)], cluster(gpus=views), NOW, policy="firstfit")
    assert started(result) == {2: ()}
    assert result.waiting == {1: WaitReason.RESOURCES}


def test_no_gpus_at_all() -> None:
    result = plan([job(1), job(2, gpus=0)], cluster(0, cpu_slots=1), NOW, policy="firstfit")
    assert started(result) == {2: ()}
    assert result.waiting == {1: WaitReason.RESOURCES}


def test_empty_queue() -> None:
    assert plan([], cluster(2), NOW) == Plan()


def test_unknown_policy_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="fifo, firstfit"):
        plan([job(1)], cluster(1), NOW, policy="lottery")


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_deterministic_and_does_not_modify_inputs(policy: str) -> None:
    queue = [job(i, gpus=i % 3, mem=None if i % 4 else 30 * GiB) for i in range(1, 200)]
    views = (gpu(0), gpu(1, foreign=True, free=50 * GiB), gpu(2, held_by=1000), gpu(3))
    c = cluster(gpus=views, cpu_slots=2)
    first = plan(queue, c, NOW, policy=policy)
    assert plan(list(reversed(queue)), c, NOW, policy=policy) == first
    assert queue == [job(i, gpus=i % 3, mem=None if i % 4 else 30 * GiB) for i in range(1, 200)]


def test_big_queue_fills_the_machine_once() -> None:
    queue = [job(i, gpus=1 + i % 2) for i in range(1, 10_001)]
    result = plan(queue, cluster(8, cpu_slots=0), NOW, policy="firstfit")
    assert sum(len(start.gpus) for start in result.starts) == 8
    assert len(result.starts) + len(result.waiting) == 10_000
    assert len({index for start in result.starts for index in start.gpus}) == 8
