"""Which queued jobs start now, on which GPUs, and why the others wait.

``plan()`` is a pure function over plain data: the service gathers the queue, the GPU
view (NVML or fake) and the running jobs, calls ``plan()`` once per tick, and acts on
the returned ``Start``s. Policies live in ``POLICIES`` so new ones (backfill, fair
share) plug in without touching callers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter


@dataclass(frozen=True)
class GpuView:
    """One GPU as seen this tick."""

    index: int  # NVML / PCI bus order, the number CUDA_VISIBLE_DEVICES uses
    uuid: str
    memory_total: int  # bytes
    memory_free: int  # bytes
    foreign: bool  # a process the daemon did not start is using it
    held_by: int | None = None  # id of the daemon job holding it


@dataclass(frozen=True)
class QueuedJob:
    """What the scheduler needs to know about a queued job."""

    id: int
    user: str
    group: str | None
    gpus: int  # 0 = CPU-only job, which takes one CPU slot
    gpu_memory: int | None  # bytes of free memory needed on each GPU
    submitted_at: float
    time_limit: int | None  # seconds
    priority: str = "normal"
    after: tuple[int, ...] = ()
    after_ok: tuple[int, ...] = ()
    preemptible: bool = False


@dataclass(frozen=True)
class RunningJob:
    """A job holding resources (starting or running)."""

    id: int
    user: str
    group: str | None
    gpus: tuple[int, ...]  # empty for a CPU job
    started_at: float
    time_limit: int | None
    preemptible: bool = False


@dataclass(frozen=True)
class Cluster:
    """The machine this tick: its GPUs, what runs on it, and whether it takes new work."""

    gpus: tuple[GpuView, ...]
    running: tuple[RunningJob, ...]
    cpu_slots: int  # how many CPU-only jobs may run at once
    drained: bool = False  # an admin stopped new starts


class WaitReason(StrEnum):
    """Why a queued job did not start (names as in Slurm's squeue, where there is one)."""

    RESOURCES = "Resources"  # not enough free GPUs / CPU slots right now
    PRIORITY = "Priority"  # it would fit, but jobs ahead of it go first
    QUOTA_GPUS = "QuotaGPUs"
    QUOTA_HOURS = "QuotaHours"
    DEPENDENCY = "Dependency"  # an `after`/`after_ok` job has not finished (well)
    DRAINED = "Drained"
    FOREIGN_USE = "ForeignUse"  # it would fit if processes outside nai left the GPUs


@dataclass(frozen=True)
class Start:
    """Start this job on these GPUs (empty: a CPU job)."""

    job_id: int
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """The decisions of one ``plan()`` call; every queued job is in starts or waiting."""

    starts: tuple[Start, ...] = ()
    waiting: dict[int, WaitReason] = field(default_factory=dict)
    est_start: dict[int, float] = field(default_factory=dict)  # job id -> estimated time


Fit = tuple[int, ...] | WaitReason


class Resources:
    """Free GPUs and CPU slots during one ``plan()`` call; policies take from it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._gpus = sorted(cluster.gpus, key=lambda gpu: gpu.index)
        # The daemon's own records count as well as NVML's view, which can lag a tick.
        self._taken = {gpu.index for gpu in self._gpus if gpu.held_by is not None}
        self._taken.update(index for job in cluster.running for index in job.gpus)
        cpu_jobs = sum(1 for job in cluster.running if not job.gpus)
        self.cpu_free = max(0, cluster.cpu_slots - cpu_jobs)
        # Many queued jobs share a shape and resources change only on a start, so caching
        # by shape keeps a 10,000-job queue at one dict look-up per job.
        self._fits: dict[tuple[int, int | None], Fit] = {}

    def fit(self, gpus: int, gpu_memory: int | None) -> Fit:
        """The lowest-numbered GPUs a job of this shape can have now, or why it cannot."""
        shape = (gpus, gpu_memory if gpus else None)
        found = self._fits.get(shape)
        if found is None:
            found = self._fits[shape] = self._fit(*shape)
        return found

    def _fit(self, gpus: int, gpu_memory: int | None) -> Fit:
        if gpus == 0:
            return () if self.cpu_free > 0 else WaitReason.RESOURCES
        free = [gpu for gpu in self._gpus if gpu.index not in self._taken]
        usable = [
            gpu.index
            for gpu in free
            # A GPU someone uses outside nai is shared only with a job that said how much
            # memory it needs, and only if that much is free.
            if (not gpu.foreign if gpu_memory is None else gpu.memory_free >= gpu_memory)
        ]
        if len(usable) >= gpus:
            return tuple(usable[:gpus])
        without_foreign = [
            gpu
            for gpu in free
            if gpu_memory is None
            or (gpu.memory_total if gpu.foreign else gpu.memory_free) >= gpu_memory
        ]
        return WaitReason.FOREIGN_USE if len(without_foreign) >= gpus else WaitReason.RESOURCES

    def take(self, gpus: tuple[int, ...]) -> None:
        """Mark these GPUs (or, for an empty tuple, one CPU slot) as used."""
        if gpus:
            self._taken.update(gpus)
        else:
            self.cpu_free -= 1
        self._fits.clear()


PolicyFn = Callable[[Sequence[QueuedJob], Resources, float], Plan]
"""A policy gets the ready jobs in arrival order, takes resources for those it starts,
and gives every other job a reason."""


def fifo(jobs: Sequence[QueuedJob], resources: Resources, now: float) -> Plan:
    """Strict arrival order: the first job that does not fit holds back all after it."""
    starts: list[Start] = []
    waiting: dict[int, WaitReason] = {}
    blocked = False
    fit = resources.fit  # bound once: this loop runs for every queued job
    for job in jobs:
        found = fit(job.gpus, job.gpu_memory)
        if isinstance(found, WaitReason):
            waiting[job.id] = found
            blocked = True
        elif blocked:
            waiting[job.id] = WaitReason.PRIORITY
        else:
            resources.take(found)
            starts.append(Start(job.id, found))
    return Plan(starts=tuple(starts), waiting=waiting)


def firstfit(jobs: Sequence[QueuedJob], resources: Resources, now: float) -> Plan:
    """Arrival order, but any job that fits starts, even past one that does not."""
    starts: list[Start] = []
    waiting: dict[int, WaitReason] = {}
    fit = resources.fit
    for job in jobs:
        found = fit(job.gpus, job.gpu_memory)
        if isinstance(found, WaitReason):
            waiting[job.id] = found
        else:
            resources.take(found)
            starts.append(Start(job.id, found))
    return Plan(starts=tuple(starts), waiting=waiting)


POLICIES: dict[str, PolicyFn] = {"fifo": fifo, "firstfit": firstfit}


_ARRIVAL = attrgetter("submitted_at", "id")


def _ready(job: QueuedJob, finished: Mapping[int, bool]) -> bool:
    """Whether every `after` job has finished and every `after_ok` job has succeeded."""
    return all(dep in finished for dep in job.after) and all(
        finished.get(dep) is True for dep in job.after_ok
    )


def plan(
    queue: Sequence[QueuedJob],
    cluster: Cluster,
    now: float,
    *,
    finished: Mapping[int, bool] | None = None,
    policy: str = "fifo",
) -> Plan:
    """Decide which queued jobs start now and why each other one waits.

    ``finished`` maps finished job ids to whether they succeeded. A job whose dependencies
    are unknown or unfinished waits with Dependency; cancelling jobs whose ``after_ok``
    dependency failed is the caller's decision, not the scheduler's.
    """
    choose = POLICIES.get(policy)
    if choose is None:
        raise ValueError(f"unknown scheduling policy {policy!r}; known: {', '.join(POLICIES)}")
    if cluster.drained:
        return Plan(waiting=dict.fromkeys((job.id for job in queue), WaitReason.DRAINED))
    done = finished or {}
    waiting: dict[int, WaitReason] = {}
    ready: list[QueuedJob] = []
    for job in sorted(queue, key=_ARRIVAL):
        if (job.after or job.after_ok) and not _ready(job, done):
            # Not in the policy's order at all: a job waiting on another must not hold
            # back the queue behind it, or a pipeline would stall everyone.
            waiting[job.id] = WaitReason.DEPENDENCY
        else:
            ready.append(job)
    decided = choose(ready, Resources(cluster), now)
    waiting.update(decided.waiting)
    return Plan(starts=decided.starts, waiting=waiting, est_start=dict(decided.est_start))
