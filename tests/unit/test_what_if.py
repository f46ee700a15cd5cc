"""`core.what_if`: when a job would start, were it queued now (dry-run submits)."""

from __future__ import annotations

from nai_server.core.sched_types import Cluster, GpuView, QueuedJob, RunningJob, WaitReason
from nai_server.core.what_if import estimate_start

GIB = 1 << 30
NOW = 1000.0


def _gpus(n: int, held: dict[int, int] | None = None) -> tuple[GpuView, ...]:
    held = held or {}
    return tuple(GpuView(index=i, uuid=f"u{i}", memory_total=80 * GIB,
                         memory_free=0 if i in held else 80 * GIB, foreign=False,
                         held_by=held.get(i)) for i in range(n))


def _job(job_id: int, gpus: int, limit: int | None = 3600, at: float = NOW) -> QueuedJob:
    return QueuedJob(id=job_id, user="u", group=None, gpus=gpus, gpu_memory=None,
                     submitted_at=at, time_limit=limit)


def _running(job_id: int, gpus: tuple[int, ...], limit: int | None, started: float
             ) -> RunningJob:
    return RunningJob(id=job_id, user="v", group=None, gpus=gpus, started_at=started,
                      time_limit=limit)


def test_an_idle_server_starts_it_now() -> None:
    cluster = Cluster(gpus=_gpus(2), running=(), cpu_slots=1)
    found = estimate_start(_job(9, 2), [], cluster, NOW)
    assert (found.at, found.reason) == (NOW, None)


def test_it_starts_when_the_running_jobs_time_limits_free_enough_gpus() -> None:
    running = (_running(1, (0,), 600, NOW - 100), _running(2, (1,), 1800, NOW))
    cluster = Cluster(gpus=_gpus(2, {0: 1, 1: 2}), running=running, cpu_slots=1)
    one = estimate_start(_job(9, 1), [], cluster, NOW)
    assert (one.at, one.reason) == (NOW + 500, WaitReason.RESOURCES)
    both = estimate_start(_job(9, 2), [], cluster, NOW)
    assert both.at == NOW + 1800


def test_it_waits_behind_the_queue_ahead_of_it() -> None:
    running = (_running(1, (0, 1), 600, NOW),)
    cluster = Cluster(gpus=_gpus(2, {0: 1, 1: 1}), running=running, cpu_slots=1)
    ahead = [_job(5, 2, limit=1000, at=NOW - 50)]
    found = estimate_start(_job(9, 2), ahead, cluster, NOW)
    assert found.at == NOW + 600 + 1000


def test_no_estimate_behind_a_job_without_a_time_limit_or_on_a_drained_server() -> None:
    running = (_running(1, (0, 1), None, NOW),)
    cluster = Cluster(gpus=_gpus(2, {0: 1, 1: 1}), running=running, cpu_slots=1)
    found = estimate_start(_job(9, 1), [], cluster, NOW)
    assert (found.at, found.reason) == (None, WaitReason.RESOURCES)
    drained = Cluster(gpus=_gpus(2), running=(), cpu_slots=1, drained=True)
    assert estimate_start(_job(9, 1), [], drained, NOW).reason == WaitReason.DRAINED


def test_every_policy_gives_the_same_date_on_a_plain_queue() -> None:
    running = (_running(1, (0, 1), 600, NOW),)
    cluster = Cluster(gpus=_gpus(2, {0: 1, 1: 1}), running=running, cpu_slots=1)
    for policy in ("fifo", "firstfit", "fairshare"):
        found = estimate_start(_job(9, 2), [_job(5, 2, 1000, NOW - 50)], cluster, NOW,
                               policy=policy)
        assert found.at == NOW + 1600, policy


def test_a_stopping_job_lets_go_at_once_and_a_queue_past_the_bounds_has_no_date() -> None:
    stopping = RunningJob(id=1, user="v", group=None, gpus=(0, 1), started_at=NOW,
                          time_limit=None, stopping=True)
    cluster = Cluster(gpus=_gpus(2, {0: 1, 1: 1}), running=(stopping,), cpu_slots=1)
    assert estimate_start(_job(9, 2), [], cluster, NOW).at == NOW
    busy = Cluster(gpus=_gpus(2, {0: 1, 1: 1}), running=(_running(1, (0, 1), 60, NOW),),
                   cpu_slots=1)
    ahead = [_job(100 + k, 2, 60, NOW - 100 + k) for k in range(50)]
    assert estimate_start(_job(9, 2), ahead, busy, NOW).at == NOW + 60 * 51
    assert estimate_start(_job(9, 2), ahead, busy, NOW, max_steps=10).at is None
