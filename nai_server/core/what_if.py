"""When would a job start, were it queued now? (`POST /v1/jobs?dry_run=1`.)

The scheduler's own `plan()` only dates the job it keeps a reservation for. A dry run
needs a date for any job, so the plan is run forward: the job joins the queue, and
at each step the plan starts what it starts, then time moves to the next moment a
running job must have let go of its GPUs (its time limit, or its predicted end where
the accounting has run-time predictions: `core.predict`). The first step at which
the job starts is its estimate. A job whose start depends on a running job without a
time limit has none (None): nobody knows when that one ends.

Pure: plain data in, a date (or None) and the first step's wait reason out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from nai_server.core import predict
from nai_server.core.sched_types import (
    INF,
    Accounting,
    Cluster,
    GpuView,
    QueuedJob,
    RunningJob,
    Tuning,
    WaitReason,
    expected_end,
)
from nai_server.core.scheduling import plan

MAX_STEPS = 500  # plan() calls per estimate, at most: bounded work per request
MAX_WORK = 50_000  # and queued jobs planned, summed over the calls (a tick plans all once)


@dataclass(frozen=True)
class Estimate:
    """`at`: when the job would start (None: not known); `reason`: why it would not
    start at once (None: it would)."""

    at: float | None
    reason: WaitReason | None


def estimate_start(
    job: QueuedJob,
    queue: Sequence[QueuedJob],
    cluster: Cluster,
    now: float,
    *,
    finished: Mapping[int, bool] | None = None,
    policy: str = "fifo",
    accounting: Accounting | None = None,
    tuning: Tuning | None = None,
    max_steps: int = MAX_STEPS,
) -> Estimate:
    """When `job` (not in `queue`) would start behind `queue` on `cluster`, by the plan
    run forward over the running jobs' time limits (see the module's docstring). A
    queue too long to plan through within the bounds gives no date (None)."""
    if cluster.drained:
        return Estimate(None, WaitReason.DRAINED)
    waiting = [*queue, job]
    end_of = _ends(accounting)
    gpus = {g.index: g for g in cluster.gpus}
    running = list(cluster.running)
    at, first = now, None
    for step in range(min(max_steps, max(4, MAX_WORK // len(waiting)))):
        decided = plan(waiting, replace(cluster, gpus=tuple(gpus.values()),
                                        running=tuple(running)),
                       at, finished=finished, policy=policy, accounting=accounting,
                       tuning=tuning)
        if step == 0:
            first = decided.waiting.get(job.id)
        stopped = set(decided.preempt)
        if stopped:  # they let go now (a preempted job's return is not foreseen)
            running = _release(running, stopped, gpus)
        started = {s.job_id: s.gpus for s in decided.starts}
        held = {g.index for g in gpus.values() if g.held_by is not None}
        if job.id in started and not held.intersection(started[job.id]):
            return Estimate(at, first)
        for queued in [q for q in waiting if q.id in started]:
            taken = started[queued.id]
            if held.intersection(taken):
                continue  # on GPUs still being freed: the next step starts it
            waiting.remove(queued)
            running.append(RunningJob(
                id=queued.id, user=queued.user, group=queued.group, gpus=taken,
                started_at=at, time_limit=queued.time_limit, preemptible=queued.preemptible,
                attained=queued.attained))
            for index in taken:
                gpus[index] = replace(gpus[index], held_by=queued.id, memory_free=0)
        if stopped or any(held.intersection(t) for t in started.values()):
            continue  # GPUs let go at this very moment: plan again now
        # Otherwise this moment's plan started all it could: on to the next end (which
        # may be now: a stopping or overdue job lets go at once).
        following = min((end_of(r, at) for r in running), default=INF)
        if following == INF:
            return Estimate(None, first)  # it waits on a job with no time limit
        at = following
        running = _release(running, {r.id for r in running if end_of(r, at) <= at}, gpus)
    return Estimate(None, first)


def _ends(accounting: Accounting | None) -> Callable[[RunningJob, float], float]:
    """When a running job lets go of its GPUs, as seen at a moment: at its time limit,
    or, where `accounting` has run-time predictions (`core.predict`), at its predicted
    end (never past its limit), fixed when the job is first seen so that it comes."""
    predicted = accounting.runtimes if accounting is not None else {}
    if not predicted:
        return expected_end
    fixed: dict[int, float] = {}

    def end(job: RunningJob, at: float) -> float:
        if job.stopping:
            return at
        if job.id not in fixed:
            guess = predict.estimate(predicted, job.user, job.time_limit)
            fixed[job.id] = predict.expected_end(job.started_at, guess, job.time_limit, at)
        return max(at, fixed[job.id])

    return end


def _release(running: list[RunningJob], ids: set[int],
             gpus: dict[int, GpuView]) -> list[RunningJob]:
    """`running` without the jobs `ids`, their GPUs free again (in `gpus`)."""
    for index, gpu in list(gpus.items()):
        if gpu.held_by in ids:
            gpus[index] = replace(gpu, held_by=None, memory_free=gpu.memory_total)
    return [r for r in running if r.id not in ids]
