"""Which queued jobs start now, on which GPUs, and why the others wait.

``plan()`` is a pure function over plain data: the service gathers the queue, the GPU
view (NVML or fake), the running jobs and (for fair share and quotas) the accounting,
calls ``plan()`` once per tick, and acts on the returned ``Plan``. Policies live in
``POLICIES`` so callers pick one by name:

- ``fifo``: strict arrival order; the first job that does not fit holds back the rest
  (and is the one given an estimated start).
- ``firstfit``: arrival order, but whatever fits starts.
- ``backfill``: arrival order with EASY backfill on the jobs' time limits (``backfill``).
- ``fairshare``: multifactor priority (decayed per-user/group usage against shares, age,
  size, QOS) with EASY backfill and optional preemption (``fairshare``, ``preempt``).

Quotas and dependencies hold in every policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter

from nai_server.core.backfill import backfill, expected_start, reserve
from nai_server.core.fairshare import fairshare
from nai_server.core.sched_types import (
    DEFAULT_TUNING,
    INF,
    NO_ACCOUNTING,
    Accounting,
    Cluster,
    Fit,
    GpuView,
    Plan,
    QueuedJob,
    QuotaLimit,
    Resources,
    RunningJob,
    Start,
    Tuning,
    WaitReason,
    usable_later,
)

__all__ = [
    "DEFAULT_POLICY", "POLICIES", "Accounting", "Cluster", "Fit", "GpuView", "Plan",
    "PolicyFn", "QueuedJob", "QuotaLimit", "Resources", "RunningJob", "Start", "Tuning",
    "WaitReason", "backfill", "fairshare", "fifo", "firstfit", "plan", "quota_holds",
]  # fmt: skip

PolicyFn = Callable[[Sequence[QueuedJob], Resources, float], Plan]
"""A policy gets the ready jobs in arrival order, takes resources for those it starts,
and gives every other job a reason. ``Resources`` also carries accounting and tuning."""


def fifo(jobs: Sequence[QueuedJob], resources: Resources, now: float) -> Plan:
    """Strict arrival order: the first job that does not fit holds back all after it.

    A job held by its quota does not hold back others (as in Slurm).
    """
    starts: list[Start] = []
    waiting: dict[int, WaitReason] = {}
    est_start: dict[int, float] = {}
    blocked = False
    fit = resources.fit  # bound once: this loop runs for every queued job
    quota_block = resources.quota_block
    for job in jobs:
        over = quota_block(job)
        if over is not None:
            waiting[job.id] = over
            continue
        found = fit(job.gpus, job.gpu_memory)
        if isinstance(found, WaitReason):
            waiting[job.id] = found
            if not blocked:
                # The job holding back the rest starts as soon as enough comes free:
                # its estimate is as good as backfill's head's.
                est_start.update(_estimate(job, resources, now))
            blocked = True
        elif blocked:
            waiting[job.id] = WaitReason.PRIORITY
        else:
            resources.take(found, job)
            starts.append(Start(job.id, found))
    return Plan(starts=tuple(starts), waiting=waiting, est_start=est_start)


def _estimate(job: QueuedJob, resources: Resources, now: float) -> dict[int, float]:
    """When the first job that does not fit is expected to start (nothing if unknown)."""
    reservation = reserve(job, resources, now)
    if reservation is None:
        return {}
    at = expected_start(job, reservation, resources, now)
    return {} if at == INF else {job.id: at}


def firstfit(jobs: Sequence[QueuedJob], resources: Resources, now: float) -> Plan:
    """Arrival order, but any job that fits starts, even past one that does not."""
    starts: list[Start] = []
    waiting: dict[int, WaitReason] = {}
    fit = resources.fit
    quota_block = resources.quota_block
    for job in jobs:
        found = quota_block(job) or fit(job.gpus, job.gpu_memory)
        if isinstance(found, WaitReason):
            waiting[job.id] = found
        else:
            resources.take(found, job)
            starts.append(Start(job.id, found))
    return Plan(starts=tuple(starts), waiting=waiting)


def quota_holds(
    queue: Sequence[QueuedJob], held: Sequence[RunningJob], accounting: Accounting
) -> dict[int, WaitReason]:
    """Which of ``queue``, in the given order, their owners' quotas hold back, for a
    backend that schedules by itself (Slurm): nai only decides whether a job may be
    handed over. ``held`` are the jobs and replicas that hold GPUs or will (already
    handed over, pending there included); each job let through counts as held for the
    jobs behind it. QuotaHours and QuotaGPUs as ``plan()`` gives them."""
    resources = Resources(Cluster(gpus=(), running=tuple(held), cpu_slots=0),
                          accounting=accounting)
    holds: dict[int, WaitReason] = {}
    for job in queue:
        over = resources.quota_block(job)
        if over is None:
            resources.hold_elsewhere(job)
        else:
            holds[job.id] = over
    return holds


POLICIES: dict[str, PolicyFn] = {
    "fifo": fifo,
    "firstfit": firstfit,
    "backfill": backfill,
    "fairshare": fairshare,
}
DEFAULT_POLICY = "fairshare"  # what a server should run; plan()'s own default stays fifo


_SUBMITTED = attrgetter("submitted_at")
_ID = attrgetter("id")


def arrival_order(queue: Sequence[QueuedJob]) -> list[QueuedJob]:
    """The jobs by ``(submitted_at, id)``: by id, then stably by submission time. Two
    sorts on plain numbers cost no more than one on pairs, and keep 10,000 key tuples
    from the garbage collector."""
    ready = sorted(queue, key=_ID)
    ready.sort(key=_SUBMITTED)
    return ready


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
    accounting: Accounting | None = None,
    tuning: Tuning | None = None,
) -> Plan:
    """Decide which queued jobs start now, which running jobs to preempt, and why each
    other queued job waits.

    ``finished`` maps finished job ids to whether they succeeded. A job whose dependencies
    are unknown or unfinished waits with Dependency; cancelling jobs whose ``after_ok``
    dependency failed is the caller's decision, not the scheduler's.

    ``accounting`` brings decayed usage, shares and quotas (none: equal shares, no
    quotas); ``tuning`` the fair-share weights and preemption settings. A start may be
    on GPUs of jobs in ``Plan.preempt``: stop those first, and launch that start only
    when they have let go (pass them as ``RunningJob(stopping=True)`` meanwhile).

    Such a start's GPUs are *promised* to its job (``Plan.promised``; pass it back as
    ``Cluster.promised``): while the victims stop, and once they are gone, no other job
    takes those GPUs, however it ranks now, and the job starts on them as soon as they
    are all free (``_keep_promises``). Otherwise a job that ranks ahead of it but had no
    right to stop the victims, often one of the victims' own user's, would get the GPUs
    at the tick they come free, and the preemption would have thrown away the victims'
    work for nothing. A promise lapses when its job is no longer ready in the queue, its
    quota holds it, or a GPU of it is held by a job not stopping or no longer suits it:
    the job then takes its turn in the order like any other.
    """
    choose = POLICIES.get(policy)
    if choose is None:
        raise ValueError(f"unknown scheduling policy {policy!r}; known: {', '.join(POLICIES)}")
    if cluster.drained:  # nothing starts; promises stand until the drain ends
        return Plan(
            waiting=dict.fromkeys((job.id for job in queue), WaitReason.DRAINED),
            promised=dict(cluster.promised),
        )
    done = finished or {}
    waiting: dict[int, WaitReason] = {}
    ready = arrival_order(queue)
    if [job for job in ready if job.after or job.after_ok]:
        # Not in the policy's order at all: a job waiting on another must not hold
        # back the queue behind it, or a pipeline would stall everyone.
        blocked = {job.id for job in ready if not _ready(job, done)}
        waiting.update(dict.fromkeys(blocked, WaitReason.DEPENDENCY))
        ready = [job for job in ready if job.id not in blocked]
    resources = Resources(cluster, now, accounting or NO_ACCOUNTING, tuning or DEFAULT_TUNING)
    first: list[Start] = []
    promised: dict[int, tuple[int, ...]] = {}
    if cluster.promised:
        ready = _keep_promises(ready, resources, first, waiting, promised)
    decided = choose(ready, resources, now)
    if waiting:
        waiting.update(decided.waiting)
    else:
        waiting = decided.waiting  # the policy's own dict: a copy of 10,000 entries saved
    starts = decided.starts
    if first:
        starts = (*first, *starts)
    if resources.evicted:  # starts on GPUs of jobs stopped in this pass
        evicted = resources.evicted
        promised.update(
            (start.job_id, start.gpus) for start in starts if evicted.intersection(start.gpus)
        )
    est_start = dict(decided.est_start)
    est_start.update(dict.fromkeys(promised.keys() - {s.job_id for s in starts}, now))
    return Plan(
        starts=starts,
        waiting=waiting,
        est_start=est_start,
        preempt=decided.preempt,
        head=decided.head,
        promised=promised,
    )


def _keep_promises(
    ready: list[QueuedJob],
    resources: Resources,
    starts: list[Start],
    waiting: dict[int, WaitReason],
    kept: dict[int, tuple[int, ...]],
) -> list[QueuedJob]:
    """Honour ``Cluster.promised`` before any policy sees the queue: a promised job whose
    GPUs are all free starts on them (added to ``starts``); one whose GPUs are still held
    by jobs stopping for it waits for them (``waiting``, and ``kept`` for the next plan),
    and those of its GPUs already free are taken for it meanwhile. Returns the other
    ready jobs, for the policy; a promise that lapses leaves its job among them."""
    promised = resources.cluster.promised
    mine = {job.id: job for job in ready if job.id in promised}
    if not mine:
        return ready
    stopping = {i for run in resources.cluster.running if run.stopping for i in run.gpus}
    by_index = {gpu.index: gpu for gpu in resources.gpus}
    for job_id, gpus in promised.items():
        job = mine.get(job_id)
        if job is None:
            continue  # started, cancelled, or no longer ready: the promise lapses
        if (
            len(gpus) != job.gpus
            or resources.quota_block(job) is not None
            or not all(_still_promised(by_index.get(i), job, resources, stopping) for i in gpus)
        ):
            del mine[job_id]  # it takes its turn in the order
            continue
        resources.take(gpus, job)
        if stopping.intersection(gpus):
            resources.promised.update(gpus)
            waiting[job_id] = WaitReason.RESOURCES
            kept[job_id] = gpus
        else:
            starts.append(Start(job_id, gpus))
    return [job for job in ready if job.id not in mine]


def _still_promised(
    gpu: GpuView | None, job: QueuedJob, resources: Resources, stopping: set[int]
) -> bool:
    """Whether a promised GPU may still be kept for ``job``: held by a job stopping (for
    it), or free and suitable for it, judged as a GPU whose nai job just left. Its
    memory reading may still show the victim's use (the GPUs are probed before the
    victims are reaped in a tick); a promise dropped for that would hand the GPU to
    whoever ranks first, the very waste promises prevent."""
    if gpu is None:
        return False
    if gpu.index in resources.taken:
        return gpu.index in stopping
    return usable_later(gpu, job.gpu_memory)
