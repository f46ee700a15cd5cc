"""EASY backfill: later jobs start early only if they cannot delay the first waiting one.

Jobs are taken in the policy's order. Until one does not fit, each starts (or, under
fair share, may preempt). The first that neither fits nor preempts becomes the *head*:
it gets a reservation, the earliest time enough resources come back according to the
running jobs' ``started_at + time_limit`` (fair share keeps only reservations within a
window, or for jobs that have waited long: see ``easy``). A later job then starts now
only if it ends by that time (by its own time limit) or uses only resources the head
does not need at it (``spare``); a job without a time limit never ends "by" then.

A job that asks for every GPU needs them all free at once, which a reservation built on
over-estimated time limits rarely brings about: jobs that end "in time" by their limits
keep filling GPUs as others free them. So once such a job has waited long enough, the
policy may *drain* the machine for it: behind it, only jobs no longer than itself start
(``drain_until``), so GPUs free up as running jobs actually end, for a bounded time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter

from nai_server.core import predict
from nai_server.core.sched_types import (
    HOUR,
    INF,
    Fit,
    Plan,
    QueuedJob,
    Resources,
    RunningJob,
    Start,
    WaitReason,
    time_limit_of,
    usable_later,
)

_ID = attrgetter("id")

Preempter = Callable[[QueuedJob, Resources, float], tuple[RunningJob, ...] | None]
"""Which running jobs to stop so that this job fits now (None: none may, or none will do)."""


@dataclass
class Reservation:
    """Where the head job will start and what later jobs may still use past then."""

    at: float  # INF when a job it waits for has no time limit
    cpu: bool  # the head needs a CPU slot, not GPUs
    usable: frozenset[int]  # GPUs the head could use
    spare: int  # units free at `at` that the head does not need
    until: float = INF  # while draining for the head: later jobs must end by then too

    def admit(
        self, job: QueuedJob, gpus: tuple[int, ...], now: float, length: float | None
    ) -> bool:
        """Whether ``job``, expected to run ``length`` seconds, may start now on ``gpus``;
        if it runs past ``at`` (or ``until``), it uses spare."""
        if (job.gpus == 0) != self.cpu:
            return True  # other kind of resource than the head waits for
        if self.at != INF and length is not None and now + length <= min(self.at, self.until):
            return True
        cost = 1 if self.cpu else sum(1 for index in gpus if index in self.usable)
        if cost > self.spare:
            return False
        self.spare -= cost
        return True


def reserve(job: QueuedJob, resources: Resources, now: float) -> Reservation | None:
    """The head's reservation, or None if the job cannot fit even on an empty machine as
    it is now (foreign processes, too few or too small GPUs): such a job holds back none."""
    if job.gpus == 0:
        times = sorted([now] * resources.cpu_free + resources.cpu_free_at)
        need, usable = 1, frozenset[int]()
    else:
        free_at = resources.gpu_free_at
        slots = [
            (free_at.get(gpu.index, now), gpu.index)
            for gpu in resources.gpus
            if (
                usable_later(gpu, job.gpu_memory)
                if gpu.index in resources.taken
                else resources.usable_now(gpu, job.gpu_memory)
            )
        ]
        slots.sort()
        times = [at for at, _ in slots]
        need, usable = job.gpus, frozenset(index for _, index in slots)
    if len(times) < need:
        return None
    at = times[need - 1]
    spare = sum(1 for t in times if t <= at) - need
    return Reservation(at, job.gpus == 0, usable, spare)


def expected_start(job: QueuedJob, head: Reservation, resources: Resources, now: float) -> float:
    """When the head is expected to start: its reservation's time, or earlier where the
    running jobs it waits for are predicted to end sooner than their limits say
    (``Accounting.runtimes``, see ``core.predict``; with ``Tuning.predict`` the
    reservation already counts on that). Only the estimate changes, never the plan."""
    predicted = resources.accounting.runtimes
    if not predicted or resources.tuning.predict or head.cpu:
        return head.at
    free_at = dict(resources.gpu_free_at)
    for run in resources.cluster.running:
        if run.gpus and not run.stopping and run.id not in resources.stopped:
            guess = predict.estimate(predicted, run.user, run.time_limit)
            end = predict.expected_end(run.started_at, guess, run.time_limit, now)
            free_at.update((g, end) for g in run.gpus if g not in resources.evicted)
    times = sorted(free_at.get(g, INF) if g in resources.taken else now for g in head.usable)
    return min(head.at, times[job.gpus - 1]) if len(times) >= job.gpus else head.at


def drain_until(
    job: QueuedJob, gpus: int, now: float, after: float, hold: float, length: float | None = None
) -> float | None:
    """Until when jobs behind ``job`` may run if the machine (``gpus`` GPUs) is being
    drained for it now, or None if it is not.

    Only a job asking for every GPU (of two or more) with a time limit is drained for:
    from when it has waited ``after`` times its limit (an hour at least), for ``hold``
    seconds. Meanwhile jobs behind it may start only if they are no longer than it is
    expected to be (``length``, its limit by default).
    """
    if job.time_limit is None or gpus < 2 or job.gpus < gpus:
        return None
    start = job.submitted_at + after * max(job.time_limit, HOUR)
    expected = job.time_limit if length is None else length
    return now + expected if start <= now < start + hold else None


@dataclass(frozen=True)
class HeadRule:
    """Whether a job that must wait becomes the head, whose reservation holds back the
    jobs behind it: only if its reservation is at most ``window`` seconds away (Slurm's
    ``bf_window``), it has waited ``reserve_after`` seconds, or the machine is being
    drained for it (``drain_until`` with ``drain_after``, ``drain_hold``).

    With ``slowdown`` (0: off), reservations are selective, as in Srinivasan et al.
    ("Selective reservation strategies for backfill job scheduling", JSSPP 2002): a job
    whose reservation is further off than ``near`` times its own length keeps it only
    once its slowdown so far, (waited + length) / length with its length at least an
    hour, has reached ``slowdown``. A short job gets its reservation after a short wait;
    a long one, whose reservation would idle GPUs for long, only after a long one, and
    meanwhile the jobs behind it use the GPUs.
    """

    window: float = INF
    reserve_after: float = 0.0
    drain_after: float = INF
    drain_hold: float = 0.0
    slowdown: float = 0.0
    near: float = 0.0

    def head(
        self, job: QueuedJob, found: Reservation | None, resources: Resources, now: float
    ) -> Reservation | None:
        """``found``, the job's reservation, if it is to be kept (with the drain's end)."""
        if found is None:
            return None
        gpus = len(resources.gpus)
        until = drain_until(
            job, gpus, now, self.drain_after, self.drain_hold, resources.length(job)
        )
        if until is not None:
            return replace(found, until=until)
        waited = now - job.submitted_at
        if waited >= self.reserve_after:
            return found  # starving: it keeps its reservation, whatever it costs
        if found.at - now > self.window:
            return None  # far off, and not starving: it holds back nobody
        if self.slowdown > 0:
            expected = resources.length(job)
            length = INF if expected is None else max(expected, HOUR)
            far = found.at - now > self.near * length
            if far and (waited + length) / length < self.slowdown:
                return None  # far off for its size, and not yet waited long for its size
        return found


def easy(
    order: Sequence[QueuedJob],
    resources: Resources,
    now: float,
    *,
    preempter: Preempter | None = None,
    window: float = INF,
    reserve_after: float = 0.0,
    drain_after: float = INF,
    drain_hold: float = 0.0,
    slowdown: float = 0.0,
    near: float = 0.0,
) -> Plan:
    """Start jobs in ``order`` with EASY backfill behind the first one that must wait and
    becomes the head (``HeadRule``); one that does not is passed over like a job that
    cannot fit, and the next may be head."""
    rule = HeadRule(window, reserve_after, drain_after, drain_hold, slowdown, near)
    starts: list[Start] = []
    waiting: dict[int, WaitReason] = {}
    est_start: dict[int, float] = {}
    stopped: list[int] = []
    head: Reservation | None = None
    # Jobs of one shape have the same reservation until something is taken: a long
    # queue of jobs too far off to reserve for costs one look-up each.
    reservations: dict[tuple[int, int | None], Reservation | None] = {}
    version = resources.version
    rest = iter(order)
    for job in rest:
        found = _start_or_why(job, resources, now, preempter, stopped)
        if not isinstance(found, WaitReason):
            starts.append(Start(job.id, found))
            continue
        waiting[job.id] = found
        if found is WaitReason.QUOTA_GPUS or found is WaitReason.QUOTA_HOURS:
            continue
        if resources.version != version:
            reservations.clear()
            version = resources.version
        shape = (job.gpus, job.gpu_memory)
        if shape not in reservations:
            reservations[shape] = reserve(job, resources, now)
        head = rule.head(job, reservations[shape], resources, now)
        if head is not None:
            expected = expected_start(job, head, resources, now)
            if expected != INF:
                est_start[job.id] = expected
            break
    if head is not None:
        _behind(head, rest, resources, now, starts, waiting)
    return Plan(starts=tuple(starts), waiting=waiting, est_start=est_start, preempt=tuple(stopped),
                head=job.id if head is not None else None)


def _start_or_why(
    job: QueuedJob,
    resources: Resources,
    now: float,
    preempter: Preempter | None,
    stopped: list[int],
) -> Fit:
    """Take GPUs for ``job`` now, stopping preemptible jobs (added to ``stopped``) if the
    preempter says so, or say why it must wait."""
    over = resources.quota_block(job)
    if over is not None:
        return over
    found = resources.fit(job.gpus, job.gpu_memory)
    if isinstance(found, WaitReason) and preempter is not None:
        victims = preempter(job, resources, now)
        if victims:
            for victim in victims:
                resources.evict(victim)
                stopped.append(victim.id)
            found = resources.fit(job.gpus, job.gpu_memory)
    if not isinstance(found, WaitReason):
        resources.take(found, job)
    return found


def _behind(
    head: Reservation,
    rest: Iterator[QueuedJob],
    resources: Resources,
    now: float,
    starts: list[Start],
    waiting: dict[int, WaitReason],
) -> None:
    """Backfill the jobs after the head: start those its reservation admits."""
    quotas = bool(resources.accounting.quotas)
    remaining = list(rest)
    while remaining:
        if not quotas and _settled(remaining, resources):
            # Nothing left to give: the common case of a long queue, kept cheap.
            waiting.update(dict.fromkeys(map(_ID, remaining), WaitReason.RESOURCES))
            return
        remaining = _walk(head, remaining, resources, now, starts, waiting)


def _walk(
    head: Reservation,
    jobs: list[QueuedJob],
    resources: Resources,
    now: float,
    starts: list[Start],
    waiting: dict[int, WaitReason],
) -> list[QueuedJob]:
    """Start the ``jobs`` the reservation admits, in their order, until one takes the
    last free GPU; return the jobs after that one (none if none did)."""
    quotas = bool(resources.accounting.quotas)
    # Until something is taken, jobs of one shape get one answer: remember refusals, so
    # a long queue costs a look-up per job.
    refused: dict[tuple[int, int | None, float | None], WaitReason] = {}
    answer = refused.get
    length_of = resources.length
    on_limits = length_of is time_limit_of  # the common case, without a call per job
    for at, job in enumerate(jobs):
        length = job.time_limit if on_limits else length_of(job)
        shape = (job.gpus, job.gpu_memory, length)
        if not quotas:
            known = answer(shape)
            if known is not None:
                waiting[job.id] = known
                continue
        found = resources.quota_block(job) or resources.fit(job.gpus, job.gpu_memory)
        if isinstance(found, WaitReason):
            waiting[job.id] = found
            if found is not WaitReason.QUOTA_GPUS and found is not WaitReason.QUOTA_HOURS:
                refused[shape] = found
        elif head.admit(job, found, now, length):
            resources.take(found, job)
            starts.append(Start(job.id, found))
            refused.clear()
            if resources.gpus_gone:
                return jobs[at + 1 :]
        else:
            waiting[job.id] = refused[shape] = WaitReason.PRIORITY
    return []


def _settled(rest: list[QueuedJob], resources: Resources) -> bool:
    """Whether none of ``rest`` can start, as every GPU is handed out and no CPU slot is
    free or none of them wants one: then each waits for Resources (quotas aside)."""
    if not resources.gpus_gone:
        return False
    return resources.cpu_free <= 0 or all([job.gpus for job in rest])


def backfill(jobs: Sequence[QueuedJob], resources: Resources, now: float) -> Plan:
    """Arrival order with EASY backfill on the jobs' time limits."""
    return easy(jobs, resources, now)
