"""Fair share: decayed usage against shares, turned into a multifactor priority.

As in Slurm's classic multifactor plugin, each user's (and group's) normalised decayed
usage ``U`` is compared with its normalised share ``S``: ``F = 2^(−U/S)``, so a user
who used exactly their share gets 0.5, an idle one 1, a heavy one towards 0. A job's
priority adds, with the weights in ``Tuning``: its age (waiting time, capped), its
length (short time limits first, which is what lowers everyone's waiting), its width
(the share of the machine it asks for: a whole-server job needs every GPU free at
once, so it would otherwise be passed over for ever) and its QOS (low/normal/high).
The ``fairshare`` policy orders the queue by that priority and runs EASY backfill
behind the first job that must wait (``backfill.easy``), stopping preemptible jobs for
jobs ahead of them in the order (``preempt``).

Short jobs first is what keeps waiting low, but under a backlog it would pass over
long or low-priority jobs for ever, and a job asking for the whole server would never
find every GPU free at once. Hence the guards: a *starving* job (one that has waited
``reserve_after`` and several times as long as the queue's mean wait: an outlier, not
merely part of a long backlog) goes ahead of the priority order; the machine is drained
for a whole-server job that has waited long for its size (``backfill.drain_until``);
and when the machine is empty, a whole-server job near the top of the order goes
first, so that it needs no drain of its own. Optionally (``Tuning.tail_guard``), a
narrow job at least as long as the backlog's drain time goes ahead too: under short jobs
first a multi-day job would otherwise start last and hold the busy period open.

With ``Tuning.predict``, a job's length (in the order and in backfill) is its run time
predicted from its user's finished jobs (``predict``), not its time limit."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from nai_server.core import preempt
from nai_server.core.backfill import easy
from nai_server.core.sched_types import (
    INF,
    Accounting,
    Plan,
    QueuedJob,
    Resources,
    Tuning,
    time_limit_of,
)

QOS = {"low": 0.0, "normal": 0.5, "high": 1.0}
HOUR = 3_600.0
LENGTH_SPAN = math.log2(1 + 1_000.0)  # time limits of 1,000 hours and more: length 0


def decay(usage: float, elapsed: float, half_life: float) -> float:
    """Usage ``elapsed`` seconds later, halving every ``half_life`` seconds."""
    if elapsed <= 0:
        return usage
    return usage * math.exp(-math.log(2) * elapsed / half_life)


def accrue(usage: float, gpus: float, elapsed: float, half_life: float) -> float:
    """Usage after ``elapsed`` seconds during which ``gpus`` GPUs were held.

    The old usage decays, and each GPU-second of the interval counts as decayed from
    when it was used (the exact integral), so the result does not depend on how often
    the caller accrues.
    """
    if elapsed <= 0:
        return usage
    rate = math.log(2) / half_life
    kept = math.exp(-rate * elapsed)
    return usage * kept + gpus * (1.0 - kept) / rate


def ratios(accounting: Accounting, kind: str, active: Iterable[str]) -> dict[str, float]:
    """``U/S`` per ``kind:NAME`` key, over the active names and those with usage.

    Shares are normalised over those keys only, so idle accounts do not shrink the
    shares of the people who are using the machine.
    """
    prefix = f"{kind}:"
    usage = {k: v for k, v in accounting.usage.items() if k.startswith(prefix) and v > 0}
    keys = set(usage) | {prefix + name for name in active}
    total_usage = sum(usage.values())
    shares = {key: max(accounting.shares.get(key, 1.0), 1e-9) for key in keys}
    total_shares = sum(shares.values())
    if total_usage <= 0:
        return dict.fromkeys(keys, 0.0)
    return {key: (usage.get(key, 0.0) / total_usage) / (shares[key] / total_shares) for key in keys}


class Standing:
    """Each user's and group's fair-share standing for one ``plan()`` call."""

    def __init__(self, accounting: Accounting, users: Iterable[str], groups: Iterable[str]):
        self.users = ratios(accounting, "user", users)
        self.groups = ratios(accounting, "group", groups)
        self._factors: dict[tuple[str, str | None], float] = {}

    def factor(self, user: str, group: str | None) -> float:
        """F = 2^(−U/S), with U/S the mean of the user's and (if any) the group's."""
        found = self._factors.get((user, group))
        if found is None:
            ratio = self.users.get(f"user:{user}", 0.0)
            if group is not None:
                ratio = (ratio + self.groups.get(f"group:{group}", 0.0)) / 2
            found = self._factors[(user, group)] = math.pow(2.0, -ratio)
        return found

    def over_share(self, user: str) -> bool:
        """Whether the user has used more than their share."""
        return self.users.get(f"user:{user}", 0.0) > 1.0


def length_factor(time_limit: float | None) -> float:
    """1 for the shortest time limit, falling with its logarithm to 0 at 1,000 hours;
    0 without a time limit (nothing is known, so nothing is favoured)."""
    if time_limit is None:
        return 0.0
    return max(0.0, 1.0 - math.log2(1 + time_limit / HOUR) / LENGTH_SPAN)


_Shape = tuple[str, str | None, int, int | None, str]  # user, group, GPUs, limit, QOS


def priorities(
    jobs: Sequence[QueuedJob],
    standing: Standing,
    tuning: Tuning,
    now: float,
    gpus: int,
    *,
    negated: bool = False,
    length: Callable[[QueuedJob], float | None] | None = None,
) -> list[float]:
    """Each job's multifactor priority (higher first), in the order of ``jobs``, on a
    machine of ``gpus`` GPUs (for the width factor); ``negated`` for sort keys; the
    length factor from ``length`` (a job's expected run time, the same for jobs of one
    user and time limit), else from time limits."""
    return _priorities(jobs, standing, tuning, now, gpus, -1.0 if negated else 1.0, length)


def _priorities(
    jobs: Sequence[QueuedJob],
    standing: Standing,
    tuning: Tuning,
    now: float,
    gpus: int,
    sign: float,
    length: Callable[[QueuedJob], float | None] | None,
) -> list[float]:
    """``priorities`` times ``sign`` (±1); negating each term, as here, gives exactly the
    negated sum, as rounding is symmetric."""
    # Everything but age depends on a few fields many jobs share: work it out once each,
    # for the first job of each shape (``length`` depends on user and limit only).
    fixed: dict[_Shape, float] = {}

    def first(shape: _Shape, job: QueuedJob) -> float:
        user, group, asked, limit, qos = shape
        value = fixed[shape] = sign * (
            tuning.weight_fairshare * standing.factor(user, group)
            + tuning.weight_length * length_factor(limit if length is None else length(job))
            + tuning.weight_width * min(1.0, asked / max(gpus, 1))
            + tuning.weight_qos * QOS.get(qos, 0.5)
        )
        return value

    known = fixed.get  # a shape worth exactly 0 is worked out again each time: right, if slow
    # (now − submitted) · rate is ± the age factor, capped at ±top and floored at ±0.
    rate = sign * tuning.weight_age / tuning.age_max
    top = tuning.weight_age
    capped, floor = sign * top, sign * 0.0
    # One comprehension, attributes read in it: on CPython 3.11 that beats attrgetter
    # and map, and keeps no per-job tuple alive for the garbage collector to walk.
    if sign > 0:
        return [
            (known(shape := (j.user, j.group, j.gpus, j.time_limit, j.priority)) or first(shape, j))
            + (
                capped if (age := (now - j.submitted_at) * rate) > top
                else age if age > 0.0 else floor
            )
            for j in jobs
        ]  # fmt: skip
    return [
        (known(shape := (j.user, j.group, j.gpus, j.time_limit, j.priority)) or first(shape, j))
        + (
            capped if (age := (now - j.submitted_at) * rate) < -top
            else age if age < 0.0 else floor
        )
        for j in jobs
    ]  # fmt: skip


def starving_since(jobs: Sequence[QueuedJob], tuning: Tuning, now: float) -> float:
    """Jobs submitted at or before this time are starving: they have waited
    ``reserve_after`` and ``starve_factor`` times the mean wait of ``jobs``."""
    return _starving_since([job.submitted_at for job in jobs], tuning, now)


def _starving_since(submitted: list[float], tuning: Tuning, now: float) -> float:
    if not submitted:
        return -INF
    mean_wait = now - math.fsum(submitted) / len(submitted)
    return now - max(tuning.reserve_after, tuning.starve_factor * mean_wait)


def order(
    jobs: Sequence[QueuedJob],
    standing: Standing,
    tuning: Tuning,
    now: float,
    gpus: int,
    length: Callable[[QueuedJob], float | None] | None = None,
    drain: float = INF,
) -> list[QueuedJob]:
    """Jobs by least-attained-service tier (0 for all but preempted jobs), starving jobs
    first within it (wide ones, asking for more than half the ``gpus``, before every
    tier) and, with ``tuning.tail_guard``, narrow jobs at least that many ``drain``
    times long (the backlog's drain time, ``drain_time``), then priority, then arrival
    (``jobs`` come in arrival order and the sort is stable)."""
    keys = _priorities(jobs, standing, tuning, now, gpus, -1.0, length)
    # One float per job sorts faster than (tier, starving, priority) tuples: a tier step
    # outweighs any difference in priority.
    step = 1.0 + 2.0 * sum(
        abs(w)
        for w in (
            tuning.weight_fairshare, tuning.weight_age, tuning.weight_length,
            tuning.weight_width, tuning.weight_qos,
        )
    )  # fmt: skip
    # The adjustments below touch few jobs: find them, then change only theirs.
    preempted = [i for i, job in enumerate(jobs) if job.attained]
    if preempted:
        tier = preempt.tiers(tuning)
        for i in preempted:
            job = jobs[i]
            keys[i] = keys[i] + step * tier(job.attained * (job.gpus or 1))
    if tuning.tail_guard > 0 and drain != INF:
        bound, measure = tuning.tail_guard * drain, length or time_limit_of
        keys = [
            key - step * 0.999 if _tail(job, measure, bound, gpus) else key
            for job, key in zip(jobs, keys, strict=True)
        ]
    submitted = [job.submitted_at for job in jobs]
    since = _starving_since(submitted, tuning, now)
    if submitted and min(submitted) <= since:
        # A starving job goes ahead of its tier; a starving wide one ahead of every
        # tier, as a wide job climbs the tiers (GPU-seconds) fastest once it has run.
        ahead, wide = step * 0.999, step * (preempt.MAX_TIER + 1)
        for i in [i for i, at in enumerate(submitted) if at <= since]:
            keys[i] = keys[i] - (wide if 2 * jobs[i].gpus > gpus else ahead)
    return [jobs[i] for i in sorted(range(len(jobs)), key=keys.__getitem__)]


def _tail(
    job: QueuedJob, length: Callable[[QueuedJob], float | None], bound: float, gpus: int
) -> bool:
    """Whether a job is narrow and expected to run at least ``bound`` seconds."""
    if not job.gpus or 2 * job.gpus > gpus:
        return False
    expected = length(job)
    return expected is not None and expected >= bound


def drain_time(jobs: Sequence[QueuedJob], resources: Resources, now: float) -> float:
    """Seconds the GPUs would take to finish what is queued and running if none stood
    idle: the backlog's GPU-seconds (expected lengths, and for running jobs what is left
    until their expected end) over the GPUs; inf without GPUs."""
    if not resources.gpus:
        return INF
    # A running job without a time limit counts as running for ever: cap it at a year.
    held = math.fsum(min(at - now, 365 * 24 * HOUR) for at in resources.gpu_free_at.values())
    length = resources.length
    queued = math.fsum(job.gpus * (length(job) or 0.0) for job in jobs if job.gpus)
    return (held + queued) / len(resources.gpus)


def standing_for(jobs: Sequence[QueuedJob], resources: Resources) -> Standing:
    """The standing of everyone with a queued or running job."""
    running = resources.cluster.running
    users = {job.user for job in jobs} | {job.user for job in running}
    groups = {job.group for job in jobs} | {job.group for job in running}
    return Standing(resources.accounting, users, (g for g in groups if g is not None))


def whole_first(ordered: list[QueuedJob], resources: Resources, rank: float) -> list[QueuedJob]:
    """On an empty machine, a job asking for every GPU (of two or more) that is among
    the first ``rank`` jobs of the order goes first: such a moment is rare, and one job
    taking a single GPU ends it. Only near the top of the order, though: one deep in it
    would go ahead of every job above it, and as each whole-server job ends (often early)
    the machine is empty again, so a stream of them would keep every narrower job waiting
    until the last had run. Not a preempted one either: the machine is empty because it
    made way for jobs ahead. Jobs their quota keeps from starting do not count as ahead."""
    gpus = len(resources.gpus)
    if gpus < 2 or resources.taken or rank <= 0:
        return ordered
    ahead = 0
    for i, job in enumerate(ordered):
        if resources.quota_block(job) is not None:
            continue
        if job.gpus >= gpus and not job.attained:
            return [job, *ordered[:i], *ordered[i + 1 :]]
        ahead += 1
        if ahead >= rank:
            break
    return ordered


def fairshare(jobs: Sequence[QueuedJob], resources: Resources, now: float) -> Plan:
    """Multifactor priority order (starving jobs first), EASY backfill with drains for
    whole-server jobs, and preemption of preemptible jobs."""
    tuning = resources.tuning
    if tuning.predict:
        resources.use_predictions()
    standing = standing_for(jobs, resources)
    drain = drain_time(jobs, resources, now) if tuning.tail_guard > 0 else INF
    ordered = order(jobs, standing, tuning, now, len(resources.gpus), resources.length, drain)
    ordered = whole_first(ordered, resources, tuning.whole_first_rank)
    preempter = None
    if tuning.preempt and any(run.preemptible for run in resources.cluster.running):
        preempter = preempt.Preempter(standing).victims
    return easy(
        ordered,
        resources,
        now,
        preempter=preempter,
        window=tuning.reserve_window,
        reserve_after=tuning.reserve_after,
        drain_after=tuning.drain_after,
        drain_hold=tuning.drain_hold,
        slowdown=tuning.reserve_slowdown,
        near=tuning.reserve_near,
    )
