"""One step of the daemon's loop: reap ended jobs, enforce time limits and cancel
deadlines, read the GPUs, plan, preempt, launch (the jobs' directories are built outside
the lock: `starting`). Every decision is made by pure `core` functions; this module
gathers their inputs and carries out their answers.

A preempted job gets SIGTERM and the grace period to checkpoint, then goes back to the
queue (running → preempted → queued) keeping its attained service and its job
directory, so that when it starts again it can resume from what it saved."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nai_server.app.accounts import Caller
from nai_server.app.ports import JobStore
from nai_server.app.registry import Registry
from nai_server.app.run_times import RunTimes
from nai_server.app.usage import UsageBook, held_runs
from nai_server.config import ServerConfig
from nai_server.core import scheduling as sched
from nai_server.core import wait_words
from nai_server.core.job import Job, Stop
from nai_server.core.spec import parse_size
from nai_server.core.states import ACTIVE, JobState, transition
from nai_server.core.trees import Limits
from nai_server.core.units import format_duration
from nai_server.host import contain, jobdir, metrics_ingest, unix
from nai_server.host.collection import Ended, OutputCollection, run_as
from nai_server.host.endings import JobEndings
from nai_server.host.gpu_watch import Foreign, GpuWatch
from nai_server.host.gpus import GpuInventory, GpuSnapshot
from nai_server.host.lanes import Lanes
from nai_server.host.launchers.local import (
    Handle,
    Launcher,
    LaunchRequest,
    exit_time,
    never_started,
    proc_start_ticks,
    proc_uid,
    read_wrapper_pid,
    session_of,
)
from nai_server.host.replicas import ReplicaHost
from nai_server.host.starting import Starter
from nai_server.store.atomic import CommitLock
from nai_server.store.blobs import BlobStore
from nai_server.store.db import TinyDbStore

log = logging.getLogger("nai.runtime")

ARCHIVE_EVERY_SECONDS = 60.0
# States in which a job still has to run or end: the daemon is not idle.
PENDING: frozenset[JobState] = frozenset({JobState.QUEUED, *ACTIVE})


@dataclass
class TickState:
    """What the last tick learned, kept in memory for the API (derived, not stored)."""

    snapshot: GpuSnapshot | None = None
    foreign: Foreign = field(default_factory=dict)  # by GPU: see gpu_watch
    waiting: dict[int, str] = field(default_factory=dict)
    est_start: dict[int, float] = field(default_factory=dict)
    head: int | None = None  # the waiting job free GPUs are kept for (backfill's head)
    kept: str | None = None  # what they are kept for, in words (core.wait_words)
    # GPUs a preemption freed, kept for the job it was for (the last Plan.promised):
    # passed back to the next plan, so that no other job takes them once they are free.
    promised: Mapping[int, tuple[int, ...]] = field(default_factory=dict)


class JobRuntime:
    """Carries out the scheduler's decisions on this host. Jobs are read and written
    as typed records through `jobs` (a JobStore); `store` is the same store, for the
    fair-share book and the use cases that list jobs."""

    def __init__(
        self, config: ServerConfig, store: TinyDbStore, blobs: BlobStore, gpus: GpuInventory,
        launcher: Launcher, lock: CommitLock, clock: Callable[[], float],
        drained: Callable[[], bool], registry: Registry,
        caller_for: Callable[[str], Caller], collector: Lanes | None = None,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.store = store
        self.jobs: JobStore = store
        self.blobs = blobs
        self.gpus = gpus
        self.launcher = launcher
        self.lock = lock
        self.clock = clock
        self.drained = drained
        self.registry = registry
        self.caller_for = caller_for  # a job's owner, to register its outputs as them
        self.notify = notify  # wakes the run loop (a collection has finished)
        self.jobs_dir = config.state / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        # Owners must reach their own job dir; only root may list the others.
        os.chmod(self.jobs_dir, 0o700 if config.personal else 0o711)
        self.state = TickState()
        self.gpu_note: str | None = None
        self.tuning = config.scheduler.fairshare.tuning()
        self.usage = UsageBook(store, self.tuning.half_life)
        self.run_times = RunTimes(store)  # run-time predictions, for est_start
        self._last_archive = 0.0
        limits = config.jobs
        # Jobs whose process ended and whose outputs are being collected, outside the
        # lock, by helpers running as their owners.
        self.collections = OutputCollection(
            blobs, self.job_dir,
            Limits(max_file_size=parse_size(limits.max_output_file_size),
                   max_entries=limits.max_output_entries,
                   max_total_size=parse_size(limits.max_output_size)),
            limits.collect_timeout_seconds, config.personal, lambda: self.notify(), collector,
            before=lambda job_id: self.metrics.finish(job_id))
        self.endings = JobEndings(self.jobs, registry, caller_for, self.job_dir)
        self.discards = jobdir.Discards(self.jobs_dir, limits.collect_timeout_seconds)
        self._probe: GpuSnapshot | None = None  # this tick's, for what a job left on a GPU
        self.contain = contain.Containment(config.state)
        self.metrics = metrics_ingest.MetricsIngest(  # `metrics:` from logs and event files
            self.jobs_dir, run_as=lambda job: run_as(job.user, config.personal))
        self._sweep_due = True  # at start: what a crash left behind
        self._views: dict[int, tuple[Job, sched.QueuedJob]] = {}  # see _planned
        # Jobs starting: their directories built outside the lock, in lanes per user,
        # then their processes started under it (`starting`).
        self.starter = Starter(
            self.jobs, registry, launcher, contain=lambda: self.contain, job_dir=self.job_dir,
            blobs=blobs, discards=self.discards, views_root=config.state / "views",
            personal=config.personal, notify=lambda: self.notify())
        self.watch = GpuWatch(lambda pid: self.contain.job_of(pid))
        # GPUs held outside the job table (services' replicas): running, never preempted.
        self.held_elsewhere: Callable[[], list[sched.RunningJob]] = list
        self.not_foreign: Callable[[Foreign], Foreign] = lambda foreign: foreign

    def job_dir(self, job_id: int) -> Path:
        return self.jobs_dir / str(job_id)

    # --- the loop ---------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        snapshot = self._probe = self.gpus.probe()
        self.run_times.prime()  # the archive's history, once, outside the lock
        # settled(): never launch a job whose submission a failed flush may take back.
        with self.lock.settled():
            hot = self.jobs.hot()
            ended = self._reap(hot, now)
            # Only a started job has a log to read (poll passes over the others).
            watched = [j for j in hot if j.active and j.id not in self.starter]
        self.metrics.poll(watched, {job.id for job, _ in ended})  # before an ended job's outputs
        for job, how in ended:  # outside the lock: no request waits on a job's files
            self.collections.start(job, how)
        self.collections.ahead(watched)  # a dataset processor's outputs, as they come
        with self.lock.settled():
            saved = self._finish_collected()
            hot = self.jobs.hot()
            self.state.snapshot = snapshot
            self.state.foreign = self.not_foreign(self.watch.observe(snapshot, hot))
            begun = self._schedule(now, hot)
            if now - self._last_archive >= ARCHIVE_EVERY_SECONDS:
                self._archive(now)
                self._last_archive = now
            self.starter.sweep_views(hot, now)
        self.starter.wait(begun)  # their directories, a moment (most are made by then)
        if self.starter.built():
            with self.lock.settled():
                self.starter.finish_builds(now)
        # Committed (a failed commit raised above): only now may the ends be forgotten.
        for job_id in saved:
            self.collections.forget(job_id)
        if saved or self._sweep_due:  # cgroups of ended jobs, once their processes are gone
            with self.lock:
                keep = {j.id for j in self.jobs.hot() if j.active}
            self._sweep_due = not self.contain.sweep(keep)

    def cluster_gpus(self) -> Any:
        """The GpuList of the cluster the jobs run on, when that is not this host
        (launcher: slurm); None: this host's GPUs, as probed."""
        return None

    def replica_host(self, root: Path, blobs: BlobStore, personal: bool) -> ReplicaHost:
        """Where services' replicas run: this host's processes, in cgroups beside the
        jobs' (SlurmRuntime: Slurm jobs)."""
        return ReplicaHost(root, blobs, personal, contain=self.contain)

    def busy(self) -> bool:
        with self.lock:
            return any(j.state in PENDING for j in self.jobs.hot())

    def close(self) -> None:
        """Stop the collections under way: their jobs stay running in the database, and
        the next start collects their outputs again. A job whose directory was being
        built is started again by the next daemon (`Starter.unstart`)."""
        self.starter.close()
        self.collections.close()
        self.discards.close()
        with self.lock:
            keep = {j.id for j in self.jobs.hot() if j.active}
        self.contain.close(keep)  # a running job keeps its cgroup (it outlives the daemon)

    # --- reaping ----------------------------------------------------------------------

    def _reap(self, hot: list[Job], now: float) -> list[tuple[Job, Ended]]:
        """Check every started job; return those whose process has ended and whose
        outputs must now be collected before they end, with how they ended."""
        ended = []
        for job in hot:
            if job.active and job.id not in self.collections and job.id not in self.starter:
                how = self._check(job, now)
                if how is not None:
                    ended.append((job, how))
        return ended

    def _check(self, job: Job, now: float) -> Ended | None:
        job_dir = self.job_dir(job.id)
        handle = _handle(job)
        if handle is None:
            # The daemon died between "starting" and recording the pid. The wrapper
            # writes its pid first: adopt it if it lives; never start the job again.
            pid = read_wrapper_pid(job_dir)
            if pid is None or never_started(job_dir):  # nothing of the job ran
                self.starter.unstart(job)
                return None
            ticks = proc_start_ticks(pid) if pid else None
            if pid and ticks is not None and session_of(pid) == pid and self._owns(job, pid):
                handle = Handle(pid, ticks)
                job = self.jobs.update(job.id, state=transition(job.state, JobState.RUNNING),
                                       pid=pid, pid_start=ticks,
                                       started_at=job.started_at or now)
        status, code = self.launcher.status(job_dir, handle)
        if status == "exited" and job.state == JobState.STARTING:
            # It ran, and ended while the daemon was down: it ends from running.
            job = self.jobs.update(job.id, state=transition(JobState.STARTING, JobState.RUNNING))
        if status == "running":
            assert handle is not None
            self._enforce_limits(job, handle, now)
            return None
        oom = self.contain.oom_note(job.id) is not None  # before its cgroup goes
        note = self._leftovers(job, handle)
        stop = job.stop
        if stop is not None and stop.kind == JobState.PREEMPTED and job.state == JobState.RUNNING:
            self.endings.requeue(job, stop, now)  # however it ended: it was interrupted
            return None
        if status == "exited":  # it may have ended while the daemon was down
            at = exit_time(job_dir)
            if at is not None:
                now = min(now, max(at, job.started_at or now))
        return Ended(now, status, code, note, oom)

    def _leftovers(self, job: Job, handle: Handle | None) -> str | None:
        """Kill what the job left running (its cgroup, or its session, and its user's
        new processes on its GPUs); what was killed, in words."""
        others = {j.pid for j in self.jobs.hot() if j.active and j.pid and j.id != job.id}
        note = contain.end_job(
            self.contain, job.id, handle.pid if handle else None,
            handle.start_ticks if handle else -1, self._owner_uid(job), self._probe,
            job.gpus, others)
        unenforced = self.contain.unenforced(job.spec.memory, job.spec.cpus)
        return "; ".join(n for n in (note, unenforced) if n) or None

    def _owner_uid(self, job: Job) -> int:
        account = None if self.config.personal else unix.unix_account(job.user)
        return account.pw_uid if account is not None and os.geteuid() == 0 else os.getuid()

    def _owns(self, job: Job, pid: int) -> bool:
        """Whether a recorded pid is a process of the job's owner: the daemon signals
        it as root, so a pid someone wrote must not name another user's process."""
        if self.config.personal or os.geteuid() != 0:
            return True
        account = unix.unix_account(job.user)
        return account is not None and proc_uid(pid) == account.pw_uid

    def _finish_collected(self) -> list[int]:
        """End the jobs whose outputs have been collected (or refused); their ids, to
        forget once the ends are committed."""
        saved = []
        for done in self.collections.done():
            saved.append(done.job_id)
            job = self.jobs.get(done.job_id)
            if job is None or not job.active:
                continue
            self.endings.end(job, done.ended, done.tree, done.problem)
        return saved

    def _enforce_limits(self, job: Job, handle: Handle, now: float) -> None:
        stop, limit = job.stop, job.time_limit
        if stop is None and limit and job.started_at and now - job.started_at > limit:
            self.begin_stop(job, JobState.TIMED_OUT, now)
        elif stop and not stop.killed and now >= stop.deadline:
            self.launcher.signal(handle, signal.SIGKILL)
            self.contain.kill(job.id)
            self.jobs.update(job.id, stop=dataclasses.replace(stop, killed=True))

    def begin_stop(self, job: Job, kind: JobState, now: float,
                   for_job: int | None = None) -> Job:
        """SIGTERM to the job's group now; SIGKILL after the grace period. `kind` is the
        state it is to end in; a preemption records the job it makes room for."""
        grace = self.config.jobs.cancel_grace_seconds
        handle = _handle(job)
        stop = Stop(kind, at=now, deadline=now + grace, killed=grace <= 0, for_job=for_job)
        if handle is not None:
            self.launcher.signal(handle, signal.SIGKILL if grace <= 0 else signal.SIGTERM)
        if grace <= 0:
            self.contain.kill(job.id)
        else:  # what left the job's process group hears it too
            self.contain.signal(job.id, signal.SIGTERM)
        return self.jobs.update(job.id, stop=stop)

    # --- GPUs and planning ------------------------------------------------------------

    def cluster_view(self, now: float, active: list[Job],
                     snapshot: GpuSnapshot) -> sched.Cluster:
        """The GPUs as the planner sees them: held by the active jobs and by what runs
        beside them (service replicas), foreign processes marked. The tick and a dry
        run's estimate plan from this one view."""
        elsewhere = self.held_elsewhere()
        held = {g: j.id for j in active for g in j.gpus}
        held.update({g: r.id for r in elsewhere for g in r.gpus})
        views = tuple(
            sched.GpuView(index=g.index, uuid=g.uuid, memory_total=g.memory_total,
                          memory_free=g.memory_free, foreign=g.index in self.state.foreign,
                          held_by=held.get(g.index))
            for g in snapshot.gpus)
        running = (*(self.running_view(j, now) for j in active), *elsewhere)
        return sched.Cluster(gpus=views, running=running,
                             cpu_slots=self.config.scheduler.cpu_slots,
                             drained=self.drained(), promised=self.state.promised)

    def running_view(self, job: Job, now: float) -> sched.RunningJob:
        """An active job as the planner sees it: the GPUs of this host it was given
        (SlurmRuntime: how many it holds on Slurm's nodes)."""
        return _running(job, now)

    def plan_inputs(self, now: float, hot: list[Job]
                    ) -> tuple[list[Job], sched.Cluster, sched.Accounting]:
        """What every plan is made from (the tick's, a dry run's estimate, and what
        /v1/usage reports), under the lock: the active jobs, the GPUs as they and
        service replicas hold them (`cluster_view`), and the usage book charged up to
        `now`, which the next tick does anyway."""
        # A job whose process has ended gives its GPUs back at once: collecting its
        # outputs needs none, and the next job need not wait for it.
        active = [j for j in hot if j.active and j.id not in self.collections]
        snapshot = self.state.snapshot or self.gpus.probe()
        cluster = self.cluster_view(now, active, snapshot)
        # Replicas' GPU time is their owners' use, as a job's is.
        jobs = {j.id for j in active}
        replicas = held_runs(r for r in cluster.running if r.id not in jobs)
        return active, cluster, self.usage.accounting(now, hot, replicas)

    def _schedule(self, now: float, hot: list[Job]) -> list[futures.Future[LaunchRequest]]:
        """Plan, preempt, and begin starting the jobs the plan starts; the futures of
        their directories being built."""
        queued = sorted((j for j in hot if j.state == JobState.QUEUED),
                        key=lambda j: (j.submitted_at, j.id))
        queued = self._drop_failed_dependencies(queued, now)
        active, cluster, accounting = self.plan_inputs(now, hot)
        snapshot = self.state.snapshot
        assert snapshot is not None
        held = {g.index: g.held_by for g in cluster.gpus if g.held_by is not None}
        planned = self._planned(queued)
        plan = sched.plan(planned, cluster, now,
                          finished=self.finished_dependencies(queued),
                          policy=self.config.scheduler.policy,
                          accounting=self.run_times.with_predictions(accounting, hot),
                          tuning=self.tuning)
        waiting = {k: str(v) for k, v in plan.waiting.items()}
        est_start = dict(plan.est_start)
        by_id = {j.id: j for j in queued}
        by_active = {j.id: j for j in active}
        for victim in plan.preempt:
            self._preempt(by_active[victim], plan.starts, now)
        begun = []
        for start in plan.starts:
            holders = {held[g] for g in start.gpus if g in held}
            if holders:
                # Its GPUs are being freed for it (preemption): launch once they are;
                # the next plans keep them for it meanwhile (Plan.promised).
                waiting[start.job_id] = str(sched.WaitReason.RESOURCES)
                est_start[start.job_id] = max(self._stop_deadline(h, now) for h in holders)
                continue
            begun.append(self.starter.launch(by_id[start.job_id], start.gpus, snapshot, now))
        starting = {start.job_id for start in plan.starts}
        for job_id, gpus in plan.promised.items():
            # Still waiting for the jobs stopping for it (not for a drain to end):
            if job_id not in starting and plan.waiting.get(job_id) == sched.WaitReason.RESOURCES:
                holders = {held[g] for g in gpus if g in held}
                est_start[job_id] = max((self._stop_deadline(h, now) for h in holders),
                                        default=now)
        self.state.promised = plan.promised
        self.state.waiting = waiting
        self.state.est_start = est_start
        head = (None if plan.head is None
                else next((q for q in planned if q.id == plan.head), None))
        self.state.kept = (None if head is None
                           else wait_words.kept_for(head, cluster, plan.starts, now))
        self.state.head = plan.head
        return begun

    def _planned(self, queued: list[Job]) -> list[sched.QueuedJob]:
        """The queued jobs as the planner sees them. A job's record is the same object
        while its document is unchanged (`JobStore.hot`), and both are immutable: its
        view from the last tick is reused, not built again for every job every tick."""
        last, views, planned = self._views, {}, []
        for job in queued:
            seen = last.get(job.id)
            if seen is None or seen[0] is not job:
                seen = (job, queued_view(job))
            views[job.id] = seen
            planned.append(seen[1])
        self._views = views
        return planned

    def _preempt(self, job: Job, starts: tuple[sched.Start, ...], now: float) -> None:
        """Stop a running job so that a job ahead of it can start; it will be requeued."""
        if job.state != JobState.RUNNING or job.stop:
            return
        mine = set(job.gpus)
        for_job = next((s.job_id for s in starts if mine.intersection(s.gpus)), None)
        room = f"job {for_job}" if for_job is not None else "another job"
        job = self.begin_stop(job, JobState.PREEMPTED, now, for_job=for_job)
        self.jobs.update(job.id, message=(
            f"being preempted to let {room} start: SIGTERM now (checkpoint and exit), SIGKILL "
            f"after {format_duration(round(self.config.jobs.cancel_grace_seconds))}; "
            f"it will be requeued"))
        log.info("job %s: preempting it for %s", job.id, room)

    def _stop_deadline(self, job_id: int, now: float) -> float:
        job = self.jobs.get(job_id)
        return job.stop.deadline if job is not None and job.stop is not None else now

    def finished_dependencies(self, queued: list[Job]) -> dict[int, bool]:
        """The jobs that `queued` wait for (`after`, `after_ok`) and that have ended,
        hot or archived, each with whether it succeeded: the planner's `finished`
        (`core.scheduling.plan`). The tick, SlurmRuntime's submits and a dry run's
        estimate (`host.dry_run`) read dependencies through this one call, under the
        lock."""
        finished = {}
        for dep in {d for j in queued for ds in (j.spec.after, j.spec.after_ok) for d in ds}:
            job = self.jobs.get(dep)
            if job is not None and job.terminal:
                finished[dep] = job.state == JobState.SUCCEEDED
        return finished

    def _drop_failed_dependencies(self, queued: list[Job], now: float) -> list[Job]:
        """`after_ok` on a job that did not succeed: cancel, saying which and why."""
        keep = []
        for job in queued:
            failed = None
            for dep in job.spec.after_ok:
                other = self.jobs.get(dep)
                if other is not None and other.terminal and other.state != JobState.SUCCEEDED:
                    failed = other
                    break
            if failed is None:
                keep.append(job)
                continue
            self.jobs.update(
                job.id, state=transition(JobState.QUEUED, JobState.CANCELLED), ended_at=now,
                message=f"dependency job {failed.id} ended {failed.state}, "
                        f"and this job would run only after its success (after_ok)")
        if len(keep) < len(queued):
            self.registry.collect()
        return keep

    # --- history ----------------------------------------------------------------------

    def _archive(self, now: float) -> None:
        horizon = now - self.config.jobs.archive_after_hours * 3600
        old = [j.id for j in self.jobs.hot() if j.terminal and (j.ended_at or now) <= horizon]
        if old:
            self.jobs.archive_jobs(old, now)


def _running(job: Job, now: float) -> sched.RunningJob:
    """A running job as the planner sees it."""
    return sched.RunningJob(id=job.id, user=job.user, group=job.group, gpus=job.gpus,
                            started_at=job.started_at or now, time_limit=job.time_limit,
                            preemptible=job.spec.preemptible, attained=job.attained,
                            stopping=job.stop is not None)


def queued_view(job: Job) -> sched.QueuedJob:
    """A queued job as the planner sees it (`core.scheduling`'s QueuedJob): what the
    tick plans with, and a dry-run submit's estimate (`host.dry_run`) too, so that the
    estimate and the tick see a job alike."""
    spec = job.spec
    return sched.QueuedJob(id=job.id, user=job.user, group=job.group, gpus=spec.gpus,
                           gpu_memory=spec.gpu_memory, submitted_at=job.submitted_at,
                           time_limit=job.time_limit, priority=spec.priority,
                           after=spec.after, after_ok=spec.after_ok,
                           preemptible=spec.preemptible, attained=job.attained)


def _handle(job: Job) -> Handle | None:
    return Handle(job.pid, job.pid_start) if job.pid else None
