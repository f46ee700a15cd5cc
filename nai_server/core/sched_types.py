"""The scheduler's plain data: the machine, the jobs, accounting, tuning and the plan.

Everything here is a frozen dataclass the caller fills in, except ``Resources``, the
mutable book of what is free during one ``plan()`` call. Policies live in other modules
(``scheduling``, ``backfill``, ``fairshare``, ``preempt``) and share only these types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from nai_server.core import predict

INF = float("inf")
HOUR = 3_600.0
DAY = 86_400.0


@dataclass(frozen=True)
class GpuView:
    """One GPU as seen this tick."""

    index: int  # NVML / PCI bus order, the number CUDA_VISIBLE_DEVICES uses
    uuid: str
    memory_total: int  # bytes
    memory_free: int  # bytes
    foreign: bool  # a process the daemon did not start is using it
    held_by: int | None = None  # id of the daemon job holding it


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """What the scheduler needs to know about a queued job.

    Slots keep each job's fields in the object itself: a policy reads 10,000 of them in
    priority order, scattered in memory, and one cache miss a job costs less than two.
    """

    id: int
    user: str
    group: str | None
    gpus: int  # 0 = CPU-only job, which takes one CPU slot
    gpu_memory: int | None  # bytes of free memory needed on each GPU
    submitted_at: float
    time_limit: int | None  # seconds
    priority: str = "normal"  # low | normal | high
    after: tuple[int, ...] = ()
    after_ok: tuple[int, ...] = ()
    preemptible: bool = False
    attained: float = 0.0  # seconds it has run so far, kept when it is preempted


@dataclass(frozen=True)
class RunningJob:
    """A job holding resources (starting or running)."""

    id: int
    user: str
    group: str | None
    gpus: tuple[int, ...]  # empty for a CPU job
    started_at: float  # of this run: a preempted job that restarts starts a new run
    time_limit: int | None
    preemptible: bool = False
    attained: float = 0.0  # seconds run before this run began (earlier runs)
    stopping: bool = False  # a stop (cancel, time limit, preemption) is under way
    # GPUs held where this planner does not place (Slurm's nodes): how many, not which.
    # They count against quotas and as in use, and are never among this host's `gpus`.
    gpus_elsewhere: int = 0

    @property
    def gpu_count(self) -> int:
        """Every GPU the job holds, here or elsewhere: what quotas and usage count."""
        return len(self.gpus) + self.gpus_elsewhere


@dataclass(frozen=True)
class Cluster:
    """The machine this tick: its GPUs, what runs on it, and whether it takes new work."""

    gpus: tuple[GpuView, ...]
    running: tuple[RunningJob, ...]
    cpu_slots: int  # how many CPU-only jobs may run at once
    drained: bool = False  # an admin stopped new starts
    # GPUs kept for the queued job a preemption stopped jobs for, by that job's id: the
    # last plan's ``Plan.promised``, which the caller passes back (see ``plan()``).
    promised: Mapping[int, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class QuotaLimit:
    """A user's or group's limits; None is unlimited."""

    max_gpus: int | None = None  # GPUs held at once
    gpu_hours: float | None = None  # GPU-hours per quota period


@dataclass(frozen=True)
class Accounting:
    """Usage and limits, keyed ``"user:NAME"`` and ``"group:NAME"``.

    ``usage`` is decayed GPU-seconds (see ``fairshare.decay``/``accrue``); ``shares`` are
    raw weights (missing: 1); ``used_hours`` is GPU-hours used in each key's current
    quota period, running jobs included. ``runtimes`` are predicted run times per
    ``"user:NAME"`` (``predict.runtimes``), which fair share uses instead of time limits.
    """

    usage: Mapping[str, float] = field(default_factory=dict)
    shares: Mapping[str, float] = field(default_factory=dict)
    quotas: Mapping[str, QuotaLimit] = field(default_factory=dict)
    used_hours: Mapping[str, float] = field(default_factory=dict)
    runtimes: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Tuning:
    """The fair-share policy's knobs (server config), defaults chosen on the trace replay.

    Priority = fairshare·F + age·min(1, waited/age_max) + length·(short time limit)
    + width·(share of the machine asked for) + qos·{low 0, normal ½, high 1}; see
    ``fairshare.priorities``. Backfill keeps a reservation for the first job in that
    order that must wait only if it is within ``reserve_window`` (Slurm's bf_window),
    or once the job has waited ``reserve_after``; by default always (no window): with
    short jobs first, a window mostly passed over the widest jobs, which then waited
    longest. Reservations are selective (``backfill.HeadRule``): one further off than
    ``reserve_near`` times the job's own length (an hour at least) is kept only once the
    job's slowdown so far, (waited + length) / length, has reached ``reserve_slowdown``;
    until then the jobs behind it use the GPUs. On the trace replays this met all four
    targets on 8 of 16 traces (7 without), mostly through utilisation, and on 15 of 41
    with limits drawn again and windows of the real traces (12 without); 0 turns it
    off. With ``predict``, lengths are run times predicted from each user's
    finished jobs (``predict``) rather than time limits; off by default, as on the
    trace replays mispredicted long jobs backfilled ahead of whole-server jobs.

    Two guards keep jobs from waiting for ever (see ``fairshare``): a job that has
    waited ``reserve_after`` and ``starve_factor`` times the queue's mean wait is
    *starving* and goes ahead of the priority order; and a job that asks for every GPU,
    which no reservation on over-estimated limits ever frees at once, has the machine
    drained for it once it has waited ``drain_after`` times its time limit (an hour at
    least), for ``drain_hold`` at most (see ``backfill.easy``). Drains cost less than
    they seem to: on the four traces that miss utilisation, drains lasted 14-33 hours
    in all; most of the many drains in a row are whole-server jobs run back to back on
    an emptied machine. None of these met all four targets on more traces (each 7 or 8
    of 16): a per-drain budget of idle GPU-time (1, 3, 8 times the job's own), a hold of
    at most 2, 6 or 12 times its limit, a gap of 2, 6 or 24 hours before the next job's
    drain, no drains at all. Nor did letting a far-off reservation (24 times its job's
    length away) slip by half its distance for a job that ends within that: 9 of 16
    (philly_team8 passes), but every average got worse (JCT 0.842 to 0.851, worst-user
    BSLD 0.638 to 0.680, widest p99 0.690 to 0.724, utilisation -1.54 to -1.59
    points) and targets missed went from 9 to 11 (philly_gc_0 then misses all four).
    Nor did keeping a reservation only once the job has waited a share of its distance
    (distance <= k·(waited + length), k of 2, 5, 10, 20: 5-7 of 16; with reserve_after
    raised to 4 days, 7), or reserve_after of 4 days alone (8 of 16, averages worse).

    ``whole_first_rank``: on an empty machine, a whole-server job among the first this
    many of the order starts at once (``fairshare.whole_first``). It used to be any
    whole-server job (``.inf``), and the figures above and below were measured so. On
    72 ten-day windows of the real Helios and Philly traces drawn as the family was
    (``bench/windows.py``), that let a stream of short whole-server jobs, each emptying
    the machine as it ended, hold back every narrower job: 3 met all four targets on 10
    of 16 traces and 15 of 72 windows (8 and 13 at ``.inf``), with the windows' mean
    JCT ratio 0.86 -> 0.64 and worst-user slowdown ratio 0.92 -> 0.56, for utilisation
    1.2 points lower and the widest jobs' p99 ratio 0.76 -> 0.83. 0, 1, 2, 4, 6: 19,
    19, 22, 24, 22 of the 88, against 25 at 3 and 21 at ``.inf``.

    ``tail_guard`` (off by default): a narrow job (at most half the GPUs) expected to
    run at least ``tail_guard`` times the backlog's drain time (``fairshare.drain_time``)
    goes ahead of the priority order, since starting it any later would lengthen the busy
    period. Measured at 1: utilisation met on all 16 traces, but whole-server jobs and
    short jobs wait longer, and all four targets held on fewer (5 of 16, against 8).
    Applied only while no job wider than half the machine is queued (the long narrow job
    then delays no whole-server job): 6 of 16 at 1, 7 at 2; the util misses it was for
    have wide jobs queued throughout. At 2, 3, 5: 5, 6, 8 of 16.
    """

    half_life: float = 7 * DAY  # of decayed usage; for whoever accrues usage
    predict: bool = False  # expect predicted run times (Accounting.runtimes), not limits
    weight_fairshare: float = 1.0  # F = 2^(−U/S): orders users, not above short jobs
    weight_age: float = 2.0
    age_max: float = 30 * DAY  # waiting this long earns the whole age factor
    weight_length: float = 4.0  # short jobs first: what lowers everyone's waiting
    weight_width: float = 0.75  # whole-server jobs need every GPU free at once
    weight_qos: float = 2.0
    reserve_window: float = INF  # every first waiting job keeps its reservation
    reserve_after: float = 2 * DAY
    reserve_slowdown: float = 4.0  # selective: a far-off reservation once this slowed; 0 off
    reserve_near: float = 1.0  # a reservation this many times the job's length away is near
    starve_factor: float = 3.5  # starving: waited this many times the queue's mean wait
    tail_guard: float = 0.0  # narrow jobs this many drain times long go first; 0: off
    drain_after: float = 12.0  # whole-server jobs: times its time limit before a drain
    drain_hold: float = 18 * HOUR  # how long a drain may keep GPUs idle for one job
    whole_first_rank: float = 3  # empty machine: a whole-server job this high goes first
    preempt: bool = True  # may stop preemptible jobs (they opt in per job)
    preempt_min_run: float = 300.0  # seconds a (re)started job runs before it may be stopped
    las_threshold: float = 3_600.0  # GPU-seconds of attained service that end LAS tier 0
    las_factor: float = 10.0  # each further tier is this many times longer


NO_ACCOUNTING = Accounting()
DEFAULT_TUNING = Tuning()


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
    """The decisions of one ``plan()`` call; every queued job is in starts or waiting.

    ``preempt`` lists running jobs to stop and requeue; a start may use their GPUs, so
    the caller launches such a start only once they have let go (see ``plan()``).
    ``promised`` maps each such start's job, and each job still waiting for GPUs an
    earlier preemption freed for it, to its GPUs: pass it as the next ``Cluster.promised``.
    """

    starts: tuple[Start, ...] = ()
    waiting: dict[int, WaitReason] = field(default_factory=dict)
    est_start: dict[int, float] = field(default_factory=dict)  # job id -> estimated time
    preempt: tuple[int, ...] = ()
    head: int | None = None  # the waiting job backfill keeps resources for, if any
    promised: Mapping[int, tuple[int, ...]] = field(default_factory=dict)


Fit = tuple[int, ...] | WaitReason


def expected_end(job: RunningJob, now: float) -> float:
    """When a running job will have let go of its resources at the latest (inf: unknown)."""
    if job.stopping:
        return now
    if job.time_limit is None:
        return INF
    return max(now, job.started_at + job.time_limit)


class Resources:
    """What is free, until when the rest is held, and who holds how many GPUs, during one
    ``plan()`` call; policies take from it (and the preemption step gives back)."""

    def __init__(
        self,
        cluster: Cluster,
        now: float = 0.0,
        accounting: Accounting = NO_ACCOUNTING,
        tuning: Tuning = DEFAULT_TUNING,
    ) -> None:
        self.cluster = cluster
        self.now = now
        self.accounting = accounting
        self.tuning = tuning
        self.gpus = sorted(cluster.gpus, key=lambda gpu: gpu.index)
        # The daemon's own records count as well as NVML's view, which can lag a tick.
        self.taken = {gpu.index for gpu in self.gpus if gpu.held_by is not None}
        self.taken.update(index for job in cluster.running for index in job.gpus)
        self.evicted: set[int] = set()  # GPUs of jobs preempted in this pass
        self.stopped: set[int] = set()  # ids of those jobs
        self.promised: set[int] = set()  # GPUs kept for a job a preemption was for
        cpu_jobs = sum(1 for job in cluster.running if not job.gpus)
        self.cpu_free = max(0, cluster.cpu_slots - cpu_jobs)
        # How long a job is expected to run: its limit, or (``use_predictions``) less.
        self.length: Callable[[QueuedJob], float | None] = time_limit_of
        self._ends: dict[int, float] = {}
        self._free_at()
        self._quotas = accounting.quotas
        self.held: dict[str, int] = {}  # GPUs held per "user:…"/"group:…", for quotas
        if self._quotas:
            for job in cluster.running:
                self._count(job.user, job.group, job.gpu_count)
        # Many queued jobs share a shape and resources change only on a start, so caching
        # by shape keeps a 10,000-job queue at one dict look-up per job.
        self._fits: dict[tuple[int, int | None], Fit] = {}
        self.version = 0  # bumped whenever something is taken or given back

    def _free_at(self) -> None:
        """When each held GPU / busy CPU slot comes back: for backfill's reservations."""
        self.gpu_free_at = dict.fromkeys(self.taken, INF)
        self.cpu_free_at: list[float] = []
        for job in self.cluster.running:
            end = self._ends[job.id] if job.id in self._ends else expected_end(job, self.now)
            self.gpu_free_at.update(dict.fromkeys(job.gpus, end))
            if not job.gpus:
                self.cpu_free_at.append(end)

    def use_predictions(self) -> None:
        """Expect jobs to run for their predicted time (``Accounting.runtimes``), not their
        time limits, in reservations and in what ``length`` says."""
        predicted = self.accounting.runtimes
        if not predicted:
            return
        known: dict[tuple[str, int | None], float | None] = {}

        def length(job: QueuedJob) -> float | None:
            shape = (job.user, job.time_limit)
            if shape in known:
                return known[shape]
            found = known[shape] = predict.estimate(predicted, job.user, job.time_limit)
            return found

        self.length = length
        for run in self.cluster.running:
            if not run.stopping:
                guess = predict.estimate(predicted, run.user, run.time_limit)
                self._ends[run.id] = predict.expected_end(
                    run.started_at, guess, run.time_limit, self.now
                )
        self._free_at()
        self._fits.clear()
        self.version += 1

    def fit(self, gpus: int, gpu_memory: int | None) -> Fit:
        """The lowest-numbered GPUs a job of this shape can have now, or why it cannot."""
        shape = (gpus, gpu_memory if gpus else None)
        found = self._fits.get(shape)
        if found is None:
            found = self._fits[shape] = self._fit(*shape)
        return found

    def usable_now(self, gpu: GpuView, gpu_memory: int | None) -> bool:
        """Whether a free GPU suits a job now (a just-evicted one as if its job had left).

        A GPU someone uses outside nai is shared only with a job that said how much
        memory it needs, and only if that much is free.
        """
        if gpu.index in self.evicted:
            return usable_later(gpu, gpu_memory)
        return not gpu.foreign if gpu_memory is None else gpu.memory_free >= gpu_memory

    def _fit(self, gpus: int, gpu_memory: int | None) -> Fit:
        if gpus == 0:
            return () if self.cpu_free > 0 else WaitReason.RESOURCES
        free = [gpu for gpu in self.gpus if gpu.index not in self.taken]
        usable = [gpu.index for gpu in free if self.usable_now(gpu, gpu_memory)]
        if len(usable) >= gpus:
            return tuple(usable[:gpus])
        without_foreign = [
            gpu
            for gpu in free
            if gpu_memory is None
            or (gpu.memory_total if gpu.foreign else gpu.memory_free) >= gpu_memory
        ]
        return WaitReason.FOREIGN_USE if len(without_foreign) >= gpus else WaitReason.RESOURCES

    @property
    def gpus_gone(self) -> bool:
        """No GPU left to hand out: a job asking for any waits for Resources."""
        return all(gpu.index in self.taken for gpu in self.gpus)

    def quota_block(self, job: QueuedJob) -> WaitReason | None:
        """QuotaHours or QuotaGPUs if the job's user or group may not start it now."""
        if not self._quotas or not job.gpus:
            return None
        for key in _keys(job.user, job.group):
            limit = self._quotas.get(key)
            if limit is None:
                continue
            used = self.accounting.used_hours.get(key, 0.0)
            if limit.gpu_hours is not None and used >= limit.gpu_hours:
                return WaitReason.QUOTA_HOURS
            if limit.max_gpus is not None and self.held.get(key, 0) + job.gpus > limit.max_gpus:
                return WaitReason.QUOTA_GPUS
        return None

    def hold_elsewhere(self, job: QueuedJob) -> None:
        """Count a job's GPUs as its user's and group's without placing any: a scheduler
        elsewhere (Slurm) was handed the job and places them."""
        if self._quotas:
            self._count(job.user, job.group, job.gpus)

    def take(self, gpus: tuple[int, ...], job: QueuedJob | None = None) -> None:
        """Mark these GPUs (or, for an empty tuple, one CPU slot) as used by ``job``."""
        length = None if job is None else self.length(job)
        end = INF if length is None else self.now + length
        if gpus:
            self.taken.update(gpus)
            self.gpu_free_at.update(dict.fromkeys(gpus, end))
        else:
            self.cpu_free -= 1
            self.cpu_free_at.append(end)
        if job is not None and self._quotas:
            self._count(job.user, job.group, len(gpus))
        self._fits.clear()
        self.version += 1

    def evict(self, job: RunningJob) -> None:
        """Give back what a job preempted in this pass holds."""
        self.stopped.add(job.id)
        if job.gpus:
            self.taken.difference_update(job.gpus)
            self.evicted.update(job.gpus)
            for index in job.gpus:
                self.gpu_free_at.pop(index, None)
        else:
            self.cpu_free += 1
            end = self._ends[job.id] if job.id in self._ends else expected_end(job, self.now)
            self.cpu_free_at.remove(end)
        if self._quotas:
            self._count(job.user, job.group, -job.gpu_count)
        self._fits.clear()
        self.version += 1

    def _count(self, user: str, group: str | None, gpus: int) -> None:
        for key in _keys(user, group):
            self.held[key] = self.held.get(key, 0) + gpus


def time_limit_of(job: QueuedJob) -> float | None:
    """A job's length when nothing better is known: its time limit."""
    return job.time_limit


def usable_later(gpu: GpuView, gpu_memory: int | None) -> bool:
    """Whether a GPU will suit a job once the daemon's job on it has left."""
    if gpu_memory is None:
        return not gpu.foreign
    return (gpu.memory_free if gpu.foreign else gpu.memory_total) >= gpu_memory


def _keys(user: str, group: str | None) -> tuple[str, ...]:
    return (f"user:{user}",) if group is None else (f"user:{user}", f"group:{group}")
