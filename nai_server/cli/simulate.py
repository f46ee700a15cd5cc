"""Replay a job trace through the very same ``plan()`` the daemon runs, in simulated time.

Event-driven: ``plan()`` runs whenever jobs arrive or end and, with preemption, when a
running job passes its minimum run time or into a later LAS tier (the first moment a
daemon ticking every second could decide to preempt; between events nothing frees, so
nothing else could start). A job runs for its ``duration``, or is killed at its
``time_limit``. Usage is accrued and decayed per user with ``fairshare.accrue``; a
preempted job is requeued with its attained service and later runs only what it had
not done yet (restart overhead 0). Trace schema (CSV, times in seconds):
``job_id,user,submit_time,duration,num_gpus,status,time_limit``.

    nai-server simulate --trace FILE --gpus N --policy backfill --policy fairshare+preempt

``NAME+preempt`` replays policy NAME with every job preemptible.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nai_server.core import predict, preempt
from nai_server.core.fairshare import accrue
from nai_server.core.scheduling import (
    Accounting,
    Cluster,
    GpuView,
    QueuedJob,
    RunningJob,
    Tuning,
    plan,
)

BOUND = 10.0  # seconds: bounded slowdown counts shorter jobs as this long


@dataclass(frozen=True)
class TraceJob:
    """One row of a trace."""

    id: int  # row number, from 1
    name: str
    user: str
    submit: float
    duration: float
    gpus: int
    time_limit: int | None

    @property
    def work(self) -> float:
        """Seconds it runs in all: it is killed at its time limit."""
        return self.duration if self.time_limit is None else min(self.duration, self.time_limit)


@dataclass(frozen=True)
class Done:
    """How one job fared."""

    job: TraceJob
    end: float
    preemptions: int
    started: float | None = None  # its first start
    estimated: float | None = None  # the first start time plan() estimated for it

    @property
    def jct(self) -> float:
        return self.end - self.job.submit

    @property
    def wait(self) -> float:
        """Time spent queued in all, before its first start and after preemptions."""
        return self.jct - self.job.work

    @property
    def slowdown(self) -> float:
        return max(1.0, self.jct / max(self.job.work, BOUND))


@dataclass(frozen=True)
class Replay:
    """A finished replay."""

    policy: str
    gpus: int
    done: tuple[Done, ...]
    plans: int  # plan() calls
    seconds: float  # wall-clock time the replay took


def read_trace(path: Path) -> list[TraceJob]:
    """The jobs of a trace file, in file order."""
    with path.open(newline="") as f:
        return [
            TraceJob(
                id=n,
                name=row["job_id"],
                user=row["user"],
                submit=float(row["submit_time"]),
                duration=float(row["duration"]),
                gpus=int(row["num_gpus"]),
                time_limit=int(float(row["time_limit"])) if row.get("time_limit") else None,
            )
            for n, row in enumerate(csv.DictReader(f), start=1)
        ]


class _Machine:
    """The simulated server: its queue, its running jobs, and per-user usage."""

    def __init__(self, gpus: int, preemptible: bool, tuning: Tuning) -> None:
        self.views = tuple(GpuView(i, f"sim-{i}", 80 << 30, 80 << 30, False) for i in range(gpus))
        self.preemptible = preemptible
        self.tuning = tuning
        self.queue: dict[int, QueuedJob] = {}
        self.running: dict[int, RunningJob] = {}
        self.ends: list[tuple[float, int, int]] = []  # (time, job id, run number)
        self.runs: dict[int, int] = {}  # job id -> number of its current run
        self.preempted: dict[int, int] = {}
        self.first_start: dict[int, float] = {}
        self.estimated: dict[int, float] = {}  # the first est_start plan() gave each job
        self.usage: dict[str, float] = {}  # decayed GPU-seconds per "user:NAME"
        self.held: dict[str, int] = {}  # GPUs held now per "user:NAME"
        self.history: dict[str, tuple[float, ...]] = {}  # run times of finished jobs
        self.runtimes: dict[str, float] = {}  # predicted from them (predict.runtimes)
        self.now = 0.0

    def advance(self, to: float) -> None:
        """Move the clock, accruing usage for the GPUs held meanwhile."""
        for key in set(self.usage) | set(self.held):
            self.usage[key] = accrue(
                self.usage.get(key, 0.0),
                self.held.get(key, 0),
                to - self.now,
                self.tuning.half_life,
            )
        self.now = to

    def submit(self, job: TraceJob, attained: float = 0.0) -> None:
        self.queue[job.id] = QueuedJob(
            id=job.id, user=job.user, group=None, gpus=job.gpus, gpu_memory=None,
            submitted_at=job.submit, time_limit=job.time_limit,
            preemptible=self.preemptible, attained=attained,
        )  # fmt: skip

    def start(self, job: TraceJob, gpus: tuple[int, ...]) -> None:
        attained = self.queue.pop(job.id).attained
        self.first_start.setdefault(job.id, self.now)
        self.running[job.id] = RunningJob(
            id=job.id, user=job.user, group=None, gpus=gpus, started_at=self.now,
            time_limit=job.time_limit, preemptible=self.preemptible, attained=attained,
        )  # fmt: skip
        self._hold(job.user, len(gpus))
        self.runs[job.id] = self.runs.get(job.id, 0) + 1
        heapq.heappush(self.ends, (self.now + job.work - attained, job.id, self.runs[job.id]))

    def stop(self, job: TraceJob) -> None:
        """Preempt: requeue it with the service it has had (its pending end is void)."""
        run = self.running.pop(job.id)
        self._hold(job.user, -len(run.gpus))
        self.runs[job.id] += 1
        self.preempted[job.id] = self.preempted.get(job.id, 0) + 1
        self.submit(job, run.attained + self.now - run.started_at)

    def finished(self) -> list[int]:
        """Ids of the jobs that end by now, taken off the machine."""
        gone = []
        while self.ends and self.ends[0][0] <= self.now:
            _, job_id, run = heapq.heappop(self.ends)
            if self.runs.get(job_id) == run:  # else that run was preempted
                ended = self.running.pop(job_id)
                self._hold(ended.user, -len(ended.gpus))
                gone.append(job_id)
                # What it ran in all, as the daemon would learn it when the job ends.
                ran = ended.attained + self.now - ended.started_at
                self.history = predict.learn(
                    self.history, [predict.Finished(ended.user, ran, ended.time_limit)]
                )
        if gone:
            self.runtimes.clear()
            self.runtimes.update(predict.runtimes(self.history))
        return gone

    def _hold(self, user: str, gpus: int) -> None:
        key = f"user:{user}"
        self.held[key] = self.held.get(key, 0) + gpus

    def next_wake(self) -> float | None:
        """The next moment a queued job might newly preempt a running one: a running job
        passes its minimum run time, or into a LAS tier behind the best queued job's."""
        tier = preempt.tiers(self.tuning)
        queued = self.queue.values()
        fresh = any(not job.attained for job in queued)  # usual: stops at the first
        best = 0 if fresh else min(tier(job.attained * (job.gpus or 1)) for job in queued)
        soonest = math.inf
        after_now = math.nextafter(self.now, math.inf)
        for run in self.running.values():
            gpus = len(run.gpus) or 1
            service = (run.attained + self.now - run.started_at) * gpus
            level = tier(service)
            if level < preempt.MAX_TIER:
                bound = self.tuning.las_threshold * self.tuning.las_factor**level
                # Never now itself: at a tier's edge the service can round to just
                # under it, and a wake at now would replay the same moment for ever.
                crossing = max(self.now + (bound - service) / gpus, after_now)
                soonest = min(soonest, crossing)
            ready = run.started_at + self.tuning.preempt_min_run
            if ready > self.now and level >= best:
                soonest = min(soonest, ready)
        return None if soonest == math.inf else soonest


def replay(
    trace: Sequence[TraceJob], gpus: int, policy: str, tuning: Tuning | None = None
) -> Replay:
    """Run ``trace`` on ``gpus`` GPUs under ``policy`` (``NAME`` or ``NAME+preempt``)."""
    name, _, option = policy.partition("+")
    if option not in ("", "preempt"):
        raise ValueError(f"unknown policy option {option!r} in {policy!r}; known: preempt")
    too_big = [job.name for job in trace if job.gpus > gpus]
    if too_big:
        raise ValueError(f"{len(too_big)} jobs ask for more than {gpus} GPUs, e.g. {too_big[0]}")
    clock = time.perf_counter()
    tuning = tuning or Tuning()
    machine = _Machine(gpus, option == "preempt", tuning)
    # The live dicts: plan() only reads them.
    accounting = Accounting(usage=machine.usage, runtimes=machine.runtimes)
    arrivals = sorted(trace, key=lambda job: (job.submit, job.id))
    by_id = {job.id: job for job in trace}
    done: list[Done] = []
    wakes: list[float] = []
    plans, i = 0, 0
    machine.now = arrivals[0].submit if arrivals else 0.0
    while i < len(arrivals) or machine.running or machine.queue:
        times = [machine.ends[0][0]] if machine.ends else []
        times += [wakes[0]] if wakes else []
        times += [arrivals[i].submit] if i < len(arrivals) else []
        if not times:
            stuck = ", ".join(by_id[j].name for j in list(machine.queue)[:3])
            raise RuntimeError(f"{len(machine.queue)} jobs never start under {policy}: {stuck}")
        machine.advance(max(machine.now, min(times)))
        while wakes and wakes[0] <= machine.now:
            heapq.heappop(wakes)
        for job_id in machine.finished():
            done.append(
                Done(
                    by_id[job_id], machine.now, machine.preempted.get(job_id, 0),
                    machine.first_start.get(job_id), machine.estimated.get(job_id),
                )
            )  # fmt: skip
        while i < len(arrivals) and arrivals[i].submit <= machine.now:
            machine.submit(arrivals[i])
            i += 1
        if not machine.queue:
            continue
        cluster = Cluster(gpus=machine.views, running=tuple(machine.running.values()), cpu_slots=0)
        queue = list(machine.queue.values())
        decided = plan(
            queue, cluster, machine.now, policy=name, accounting=accounting, tuning=tuning
        )
        plans += 1
        for job_id, at in decided.est_start.items():
            if job_id not in machine.first_start:  # not a preempted job's later estimate
                machine.estimated.setdefault(job_id, at)
        for job_id in decided.preempt:
            machine.stop(by_id[job_id])
        for start in decided.starts:
            machine.start(by_id[start.job_id], start.gpus)
        wake = machine.next_wake() if machine.preemptible and machine.queue else None
        if wake is not None and (not wakes or wake < wakes[0]):
            heapq.heappush(wakes, wake)
    return Replay(policy, gpus, tuple(done), plans, time.perf_counter() - clock)


def _pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else 0.0


def metrics(result: Replay) -> dict[str, float]:
    """A replay's figures: JCT, waiting, bounded slowdown, utilisation, fairness, and how
    long the jobs asking for the most GPUs waited."""
    done = result.done
    jct = [d.jct for d in done]
    per_user: dict[str, list[float]] = {}
    for d in done:
        per_user.setdefault(d.job.user, []).append(d.slowdown)
    widest = max((d.job.gpus for d in done), default=0)
    first = min((d.job.submit for d in done), default=0.0)
    makespan = max((d.end for d in done), default=0.0) - first
    service = sum(d.job.work * d.job.gpus for d in done)
    return {
        "avg_jct": statistics.fmean(jct) if jct else 0.0,
        "median_jct": statistics.median(jct) if jct else 0.0,
        "p95_jct": _pct(jct, 95),
        "avg_wait": statistics.fmean(d.wait for d in done) if done else 0.0,
        "p95_wait": _pct([d.wait for d in done], 95),
        "bsld": statistics.fmean(d.slowdown for d in done) if done else 0.0,
        "worst_user_bsld": max((statistics.fmean(v) for v in per_user.values()), default=0.0),
        "utilisation": service / (result.gpus * makespan) if makespan > 0 else 0.0,
        "makespan": makespan,
        "widest_p99_wait": _pct([d.wait for d in done if d.job.gpus == widest], 99),
        "preemptions": float(sum(d.preemptions for d in done)),
        **estimate_errors(done),
    }


def estimate_errors(done: Sequence[Done]) -> dict[str, float]:
    """How far the first estimated start of each job that got one was from its actual
    first start, relative to its wait (at least ``BOUND``): median and p90, and the
    share of jobs that got an estimate."""
    errors = [
        abs(d.estimated - d.started) / max(d.started - d.job.submit, BOUND)
        for d in done
        if d.estimated is not None and d.started is not None
    ]
    return {
        "est_error_median": statistics.median(errors) if errors else 0.0,
        "est_error_p90": _pct(errors, 90),
        "est_share": len(errors) / len(done) if done else 0.0,
    }


COLUMNS = [  # key, heading, unit
    ("avg_jct", "avg JCT", "h"), ("median_jct", "med JCT", "h"), ("p95_jct", "p95 JCT", "h"),
    ("avg_wait", "avg wait", "h"), ("p95_wait", "p95 wait", "h"), ("bsld", "BSLD", ""),
    ("worst_user_bsld", "worst user BSLD", ""), ("utilisation", "util", "%"),
    ("makespan", "makespan", "d"), ("widest_p99_wait", "widest p99 wait", "h"),
    ("preemptions", "preempted", ""),
]  # fmt: skip
_SCALE = {"h": 3600.0, "d": 86_400.0, "%": 0.01, "": 1.0}


def table(results: Sequence[tuple[str, dict[str, float]]], baseline: str = "fifo") -> str:
    """One row of figures per policy, then each as a ratio to the baseline's."""
    headings = [f"{label} ({unit})" if unit else label for _, label, unit in COLUMNS]
    width = max([len(name) for name, _ in results] + [8])
    lines = [_row("policy", headings, width, headings)]
    for name, m in results:
        cells = [f"{m[key] / _SCALE[unit]:.2f}" for key, _, unit in COLUMNS]
        lines.append(_row(name, cells, width, headings))
    base = dict(results).get(baseline)
    if base is not None:
        lines.append(f"as a ratio to {baseline} (below 1 is better, except util):")
        for name, m in results:
            cells = [_ratio(m[key], base[key]) for key, _, _ in COLUMNS]
            lines.append(_row(name, cells, width, headings))
    return "\n".join(lines)


def _row(name: str, cells: Sequence[str], width: int, headings: Sequence[str]) -> str:
    return f"{name:<{width}}" + "".join(
        f"  {cell:>{max(len(h), 8)}}" for cell, h in zip(cells, headings, strict=True)
    )


def _ratio(value: float, base: float) -> str:
    if base == 0:
        return "-" if value == 0 else "inf"
    return f"{value / base:.3f}"


def compare(trace: Sequence[TraceJob], gpus: int, policies: Sequence[str]) -> list[Replay]:
    """Replays under each policy, fifo first: every ratio needs it."""
    names = ["fifo", *dict.fromkeys(p for p in policies if p != "fifo")]
    return [replay(trace, gpus, name) for name in names]


def main(args: argparse.Namespace) -> int:
    """``nai-server simulate``: replay a trace under policies and print their figures."""
    try:
        trace = read_trace(args.trace)
        results = compare(trace, args.gpus, args.policy or ["fairshare"])
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        print(f"nai-server simulate: {args.trace}: {exc}", file=sys.stderr)
        return 2
    rows = [(r.policy, metrics(r)) for r in results]
    if args.json:
        for (_, m), r in zip(rows, results, strict=True):
            m["replay_seconds"] = r.seconds
        print(json.dumps([{"policy": name, **m} for name, m in rows], indent=2))
    else:
        print(f"{args.trace.name}: {len(trace)} jobs on {args.gpus} GPUs")
        print(table(rows))
    for r in results:
        print(f"{r.policy}: replayed in {r.seconds:.2f} s, {r.plans} plan() calls", file=sys.stderr)
    return 0
