"""Who has used how much GPU time: the accounting the scheduler plans with.

Two figures per user and group (keys ``"user:NAME"`` and ``"group:NAME"``):

- decayed usage, in GPU-seconds, for fair share (``fairshare.decay``/``accrue``): kept
  current in memory each tick, and saved with the time it is as of in one small settings
  document at most every ``SAVE_EVERY`` seconds, not on every tick. A restarted daemon
  loads that and catches up from the job records, which hold every run's start and end;
  if nothing was saved it works the whole figure out from the records.
- GPU-hours used in each quota's rolling period (running jobs included), for
  ``gpu_hours`` quotas.

Services' replicas are charged as jobs are, to their service's owner (and group), from
when they were given GPUs until they let them go. Their runs are not in the job
records, so the book keeps them itself: the replicas holding GPUs (``held``, given each
pass) are saved with the usage, and a run that ended is saved in ``SERVICE_RUNS`` (as
long as a quota period reaches it, a day at least, the newest ``MAX_SERVICE_RUNS``), so
a restarted daemon neither charges a replica twice nor forgets one within a quota. The
decayed usage needs no such list: it is in the saved figure.

The arithmetic is pure (``runs_of``, ``charge``, ``hours_used``); ``UsageBook`` holds
the state between ticks and reads and writes the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nai_server.core.fairshare import accrue, decay
from nai_server.core.job import Job, JobSummary
from nai_server.core.sched_types import DAY, HOUR, Accounting, QuotaLimit, RunningJob
from nai_server.core.states import JobState
from nai_server.store.db import TinyDbStore

Doc = dict[str, Any]
SETTING = "fairshare_usage"
SERVICE_RUNS = "service_runs"  # services' replicas' finished runs
MAX_SERVICE_RUNS = 10_000  # of them, the newest kept
SAVE_EVERY = 60.0  # seconds between saves of the decayed usage
FORGET_AFTER = 10  # half-lives: a run this long ago weighs under a thousandth
NEGLIGIBLE = 1e-3  # GPU-seconds of decayed usage not worth keeping


@dataclass(frozen=True)
class Run:
    """One stretch of a job holding GPUs: a job preempted and restarted has several."""

    job_id: int
    keys: tuple[str, ...]  # the user's and (for a group job) the group's accounting keys
    start: float
    end: float | None  # None: still running
    gpus: int


def run_doc(run: Run) -> Doc:
    return {"id": run.job_id, "keys": list(run.keys), "start": run.start, "end": run.end,
            "gpus": run.gpus}


def run_of(doc: Doc) -> Run:
    end = doc.get("end")
    return Run(int(doc["id"]), tuple(str(k) for k in doc["keys"]), float(doc["start"]),
               None if end is None else float(end), int(doc["gpus"]))


def held_runs(held: Iterable[RunningJob]) -> list[Run]:
    """The runs of GPUs held outside the job records (services' replicas), as running."""
    return [Run(r.id, keys_of(r.user, r.group), r.started_at, None, r.gpu_count)
            for r in held if r.gpu_count and r.started_at > 0]


def keys_of(user: str, group: str | None) -> tuple[str, ...]:
    """The accounting keys a job of this user (and group) is charged to."""
    return (f"user:{user}",) if group is None else (f"user:{user}", f"group:{group}")


def runs_of(job: Job | JobSummary) -> list[Run]:
    """Every run of a job with GPUs: those it was preempted from (``runs``), then the
    current or last one."""
    earlier, started = job.runs, job.started_at
    if not earlier and not started:
        return []
    keys = keys_of(job.user, job.group)
    runs = [Run(job.id, keys, r.start, r.end, r.gpus) for r in earlier if r.gpus]
    gpus = len(job.gpus) + job.gpus_elsewhere  # on Slurm's nodes: how many it asked for
    if started and gpus and job.state != JobState.QUEUED:
        end = None if job.active else job.ended_at or started
        runs.append(Run(job.id, keys, started, end, gpus))
    return runs


def charge(
    usage: Mapping[str, float], as_of: float, runs: Iterable[Run], now: float, half_life: float
) -> dict[str, float]:
    """Decayed usage at ``now``: ``usage`` (as it was at ``as_of``) decayed, plus each
    run's GPU time after ``as_of``, each second decayed from when it was used. With
    ``as_of = -inf`` and no usage, this works the figure out from the runs alone."""
    out = {key: decay(value, now - as_of, half_life) for key, value in usage.items()}
    horizon = now - FORGET_AFTER * half_life
    for run in runs:
        low = max(run.start, as_of)
        high = now if run.end is None else min(run.end, now)
        if high <= low or high < horizon:
            continue
        used = decay(accrue(0.0, run.gpus, high - low, half_life), now - high, half_life)
        for key in run.keys:
            out[key] = out.get(key, 0.0) + used
    return {key: value for key, value in out.items() if value >= NEGLIGIBLE}


def hours_used(runs: Iterable[Run], now: float, periods: Mapping[str, float]) -> dict[str, float]:
    """GPU-hours each key in ``periods`` used in its rolling period (seconds) up to now."""
    used = dict.fromkeys(periods, 0.0)
    for run in runs:
        for key in run.keys:
            period = periods.get(key)
            if period is None:
                continue
            low = max(run.start, now - period)
            high = now if run.end is None else min(run.end, now)
            if high > low:
                used[key] += (high - low) * run.gpus / HOUR
    return used


Limits = dict[str, tuple[QuotaLimit, float]]  # key -> (limit, quota period in seconds)


def quota_limits(users: Iterable[Doc], groups: Iterable[Doc]) -> Limits:
    """Each user's and group's quota that sets a limit, with its period in seconds."""
    limits: Limits = {}
    for kind, docs in (("user", users), ("group", groups)):
        for doc in docs:
            quota = doc.get("quota") or {}
            max_gpus, gpu_hours = quota.get("max_gpus"), quota.get("gpu_hours")
            if max_gpus is None and gpu_hours is None:
                continue
            period = float(quota.get("period_days") or 30) * DAY
            limits[f"{kind}:{doc['name']}"] = (QuotaLimit(max_gpus, gpu_hours), period)
    return limits


class UsageBook:
    """The accounting for each scheduling pass, kept current between passes.

    Holds the decayed usage and the time it is as of, and the finished runs that the
    longest ``gpu_hours`` quota period still covers (rebuilt from the job records when
    a longer period appears). Runs in the hot job table are seen every tick; a finished
    run is charged once because only the part after ``as_of`` is added.

    A run that appears in the records after its start (Slurm's jobs: the poll after
    Slurm started one records Slurm's start) is charged from its start, not from
    ``as_of``: the last pass did not see it, so neither it nor a saved figure charged
    any of it. Only from the second pass on: the first has no last pass to compare with.
    """

    def __init__(self, store: TinyDbStore, half_life: float, save_every: float = SAVE_EVERY):
        self.store = store
        self.half_life = half_life
        self.save_every = save_every
        self.usage: dict[str, float] = {}
        self.as_of: float | None = None  # None: not loaded yet
        self._saved_at = float("-inf")
        self._unsaved = False  # GPU time charged since the last save
        self._finished: dict[tuple[int, float], Run] = {}  # (job id, start) -> run
        self._span = 0.0  # seconds back that _finished covers
        # (job id, start) of the runs the last pass charged; None before the first pass.
        self._seen: set[tuple[int, float]] | None = None
        # Replicas' runs holding GPUs as of as_of (at load: as saved), and their ended
        # runs that a quota period or the decay still reaches (both saved).
        self._held: dict[tuple[int, float], Run] = {}
        self._ended: dict[tuple[int, float], Run] = {}
        self._restarted = False  # _held is as saved by an earlier daemon

    def accounting(self, now: float, hot: Iterable[Job], held: Iterable[Run] = ()
                   ) -> Accounting:
        """Usage, quotas and GPU-hours used as of ``now``; ``hot`` are the hot job records,
        ``held`` the runs of the replicas holding GPUs now (``held_runs``). Saves the
        usage when GPU time was charged since the last save, at most every
        ``save_every`` seconds, and at once when a replica was given or let go GPUs."""
        limits = quota_limits(self.store.list_users(), self.store.list_groups())
        periods = {
            key: period for key, (limit, period) in limits.items() if limit.gpu_hours is not None
        }
        span = max(periods.values(), default=0.0)
        if self.as_of is None or span > self._span:
            self._load(now, span)
        elif span < self._span:  # a quota was lowered or lifted: keep only what is needed
            self._span = span
            self._forget(now)
        assert self.as_of is not None
        as_of = self.as_of
        recent: list[Run] = []
        on_time: list[Run] = []  # charged from as_of
        late: list[Run] = []  # first seen now, started before as_of: charged from start
        seen: set[tuple[int, float]] = set()
        last = self._seen
        for job in hot:
            if job.state == JobState.QUEUED and not job.runs:
                continue  # the bulk of a long queue: never ran
            for run in runs_of(job):
                key = (run.job_id, run.start)
                seen.add(key)
                if run.end is not None and span:  # for the quotas' count, however charged
                    self._finished[key] = run
                if run.end is not None and run.end < as_of and (last is None or key in last):
                    # Ended before the last pass, which charged it (running, up to then)
                    # or found it ended; an end Slurm reports in a later poll still
                    # reached the quotas' count above.
                    continue
                # A run that ended at as_of added nothing to usage yet. One that ended
                # before, never seen (started and ended between two polls of Slurm), is
                # charged whole, as late.
                recent.append(run)
                if last is not None and run.start < as_of and key not in last:
                    late.append(run)
                else:
                    on_time.append(run)
        self._seen = seen
        changed = self._replicas(now, held, recent, on_time, late, span)
        usage = charge(self.usage, as_of, on_time, now, self.half_life)
        for name, value in charge({}, float("-inf"), late, now, self.half_life).items():
            usage[name] = usage.get(name, 0.0) + value
        self.usage = usage
        self.as_of = max(as_of, now)
        # Decay alone needs no save: the saved figure, decayed from its own as_of, is
        # still right, so an idle server does not rewrite the store every minute.
        self._unsaved = self._unsaved or bool(recent)
        if changed or (self._unsaved and now - self._saved_at >= self.save_every):
            self._save(now)
        used: dict[str, float] = {}
        if periods:
            running = [run for run in recent if run.end is None]
            used = hours_used([*self._finished.values(), *running], now, periods)
        return Accounting(
            usage=self.usage,
            quotas={key: limit for key, (limit, _) in limits.items()},
            used_hours=used,
        )

    def _replicas(self, now: float, held: Iterable[Run], recent: list[Run],
                  on_time: list[Run], late: list[Run], span: float) -> bool:
        """Charge the replicas' runs: those holding GPUs, and those that let them go
        since the last pass (ended now; or, first seen gone after a restart, when the
        usage was saved). A run never charged (new since ``as_of``, or held before
        replicas were charged) is charged from its start. True: the runs held changed,
        and are saved now."""
        assert self.as_of is not None
        as_of = self.as_of
        current = {(run.job_id, run.start): run for run in held}
        for key, run in current.items():
            recent.append(run)
            back = self._ended.pop(key, None)  # let go, and seen holding GPUs again:
            if back is not None:  # charged up to when it went; the open run counts now
                self._finished.pop(key, None)
            on_time_now = key in self._held or back is not None or run.start >= as_of
            (on_time if on_time_now else late).append(run)
        gone = [run for key, run in self._held.items() if key not in current]
        for run in gone:
            key = (run.job_id, run.start)
            if key in self._ended:  # saved as ended before a restart: charged then
                continue
            end = min(now, as_of) if self._restarted else now
            ended = Run(run.job_id, run.keys, run.start, max(run.start, end), run.gpus)
            self._ended[key] = ended
            recent.append(ended)
            on_time.append(ended)
            if span:
                self._finished[key] = ended
        changed = current.keys() != self._held.keys()
        self._held = current
        self._restarted = False
        if gone:
            # Kept for the quotas' periods (the decayed usage is in the saved figure), a
            # day at least, and the newest MAX_SERVICE_RUNS only: a replica that
            # crash-loops must not grow the state every commit writes.
            cutoff = now - max(DAY, span)
            kept = sorted((r for r in self._ended.values()
                           if r.end is not None and r.end >= cutoff),
                          key=lambda r: r.end or 0.0)[-MAX_SERVICE_RUNS:]
            self._ended = {(r.job_id, r.start): r for r in kept}
            self.store.set_setting(SERVICE_RUNS, [run_doc(r) for r in kept])
        return changed

    def _load(self, now: float, span: float) -> None:
        """The saved usage (or, without one, usage worked out from every job record) and
        the finished runs within ``span`` seconds."""
        saved = self.store.get_setting(SETTING) if self.as_of is None else None
        if self.as_of is None:
            ended = map(run_of, self.store.get_setting(SERVICE_RUNS) or ())
            self._ended = {(run.job_id, run.start): run for run in ended}
        history: list[Run] = []
        if (self.as_of is None and saved is None) or span > self._span:
            # Archived jobs from the store's summaries in memory: no archive is read
            # while the tick holds the lock. A job that ended before both the decay's
            # horizon and the longest quota period adds nothing to either.
            cutoff = now - max(FORGET_AFTER * self.half_life, span)
            history = [run for job in self.store.job_summaries(ended_after=cutoff)
                       for run in runs_of(job)]
            history += [run for run in self._ended.values()
                        if run.end is not None and run.end >= cutoff]
        if self.as_of is None:
            if saved is not None:
                self.usage = {str(k): float(v) for k, v in saved.get("usage", {}).items()}
                self.as_of = float(saved["as_of"])
                self._saved_at = self.as_of
                # Without "held" (saved before replicas were charged): none was charged.
                self._held = {(run.job_id, run.start): run
                              for run in map(run_of, saved.get("held", ()))}
                self._restarted = True
            else:
                self.usage = charge({}, float("-inf"), history, now, self.half_life)
                self.as_of = now
                self._unsaved = True
        if span > self._span:
            self._finished = {
                (run.job_id, run.start): run
                for run in history
                if run.end is not None and run.end >= now - span
            }
            self._span = span

    def _save(self, now: float) -> None:
        self.store.set_setting(SETTING, {"as_of": self.as_of, "usage": self.usage,
                                         "held": [run_doc(r) for r in self._held.values()]})
        self._saved_at = now
        self._unsaved = False
        self._forget(now)

    def _forget(self, now: float) -> None:
        """Drop finished runs that no quota period reaches any more."""
        horizon = now - self._span
        self._finished = {
            key: run
            for key, run in self._finished.items()
            if self._span and run.end is not None and run.end >= horizon
        }
