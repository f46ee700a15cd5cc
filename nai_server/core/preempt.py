"""Preemption: which running preemptible jobs to stop so a job ahead of them starts now.

Jobs rank by (least-attained-service tier, whether their user is over their fair
share), lower first. The tier is Tiresias' discretised two-dimensional LAS: GPU-seconds
of service received so far (``gpus × attained``), cut at ``las_threshold`` and then
every ``las_factor`` times more. A queued job may stop a running preemptible job that
ranks strictly behind it: one that has had more service (a long job yields to fresh
ones, which is what shortens the average completion time), or, at equal service, one
of a user over their share when the job's own user is not.

Nothing thrashes: a job must have run ``preempt_min_run`` seconds since it (re)started
before it can be stopped, a stopped job keeps its attained service (so it does not fall
back to tier 0), a job stopped in a pass cannot start again in that pass, and jobs
already stopping are waited for rather than joined by more victims (unless their GPUs
are promised to the job they are stopped for: see ``scheduling.plan``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from nai_server.core.sched_types import (
    GpuView,
    QueuedJob,
    Resources,
    RunningJob,
    Tuning,
    usable_later,
)

if TYPE_CHECKING:
    from nai_server.core.fairshare import Standing

MAX_TIER = 8


def tier(service: float, tuning: Tuning) -> int:
    """The LAS tier of this many GPU-seconds of attained service (0: the first)."""
    return tiers(tuning)(service)


def tiers(tuning: Tuning) -> Callable[[float], int]:
    """``tier`` for one tuning, as a fast function of the service alone."""
    bounds = [tuning.las_threshold * tuning.las_factor**level for level in range(MAX_TIER)]
    return partial(bisect_right, bounds)


class Preempter:
    """Chooses victims for one ``plan()`` call, given everyone's fair-share standing."""

    def __init__(self, standing: Standing) -> None:
        self.standing = standing
        self._ranked: list[tuple[tuple[int, bool, float], RunningJob]] | None = None
        self._futile: set[tuple[int, int | None, tuple[int, bool]]] = set()
        self._version = -1
        self._tier: Callable[[float], int] | None = None

    def victims(
        self, job: QueuedJob, resources: Resources, now: float
    ) -> tuple[RunningJob, ...] | None:
        """The fewest, lowest-ranked running jobs whose GPUs let ``job`` start now, or
        None if it should wait instead (nothing ranks behind it, or GPUs already being
        freed will be enough)."""
        if job.gpus == 0:
            return None  # a CPU slot is never worth stopping someone's work for
        if self._tier is None:
            self._tier = tiers(resources.tuning)
        mine = (self._tier(job.attained * job.gpus), self.standing.over_share(job.user))
        if resources.version != self._version:
            self._futile.clear()
            self._version = resources.version
        asked = (job.gpus, job.gpu_memory, mine)
        if asked in self._futile:
            return None
        chosen = self._choose(job, mine, resources, now)
        if chosen is None:
            self._futile.add(asked)
        return chosen

    def _rank(
        self, resources: Resources, now: float
    ) -> list[tuple[tuple[int, bool, float], RunningJob]]:
        """Running jobs that may be stopped, worst-ranked first (computed once a pass)."""
        if self._ranked is None:
            tuning = resources.tuning
            tier_of = tiers(tuning)
            ranked = []
            for run in resources.cluster.running:
                if (
                    run.preemptible
                    and run.gpus
                    and not run.stopping
                    and now - run.started_at >= tuning.preempt_min_run
                ):
                    service = (run.attained + now - run.started_at) * len(run.gpus)
                    rank = (tier_of(service), self.standing.over_share(run.user), service)
                    ranked.append((rank, run))
            ranked.sort(key=lambda item: item[0], reverse=True)
            self._ranked = ranked
        return self._ranked

    def _choose(
        self, job: QueuedJob, mine: tuple[int, bool], resources: Resources, now: float
    ) -> tuple[RunningJob, ...] | None:
        candidates = [
            run
            for rank, run in self._rank(resources, now)
            if rank[:2] > mine and run.id not in resources.stopped
        ]
        if not candidates:
            return None
        by_index = {gpu.index: gpu for gpu in resources.gpus}
        coming = sum(
            1
            for run in resources.cluster.running
            if run.stopping
            for i in run.gpus
            if i not in resources.promised and _usable(by_index, i, job)
        )
        free = sum(
            1
            for gpu in resources.gpus
            if gpu.index not in resources.taken and resources.usable_now(gpu, job.gpu_memory)
        )
        if free + coming >= job.gpus:
            return None  # wait for the jobs already stopping
        chosen: list[RunningJob] = []
        have = free
        for run in candidates:
            gain = sum(1 for i in run.gpus if _usable(by_index, i, job))
            if gain:
                chosen.append(run)
                have += gain
                if have >= job.gpus:
                    return self._trim(chosen, have, by_index, job)
        return None

    @staticmethod
    def _trim(
        chosen: list[RunningJob], have: int, by_index: dict[int, GpuView], job: QueuedJob
    ) -> tuple[RunningJob, ...]:
        """Spare the best-ranked victims that turn out not to be needed."""
        kept: list[RunningJob] = []
        for run in reversed(chosen):  # the best-ranked were chosen last
            gain = sum(1 for i in run.gpus if _usable(by_index, i, job))
            if have - gain >= job.gpus:
                have -= gain
            else:
                kept.append(run)
        return tuple(reversed(kept))


def _usable(by_index: dict[int, GpuView], index: int, job: QueuedJob) -> bool:
    gpu = by_index.get(index)
    return gpu is not None and usable_later(gpu, job.gpu_memory)
