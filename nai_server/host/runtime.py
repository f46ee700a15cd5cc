"""One step of the daemon's loop: reap ended jobs, enforce time limits and cancel
deadlines, read the GPUs, plan, preempt, launch. Every decision is made by pure `core`
functions; this module gathers their inputs and carries out their answers.

A preempted job gets SIGTERM and the grace period to checkpoint, then goes back to the
queue (running → preempted → queued) keeping its attained service and its job
directory, so that when it starts again it can resume from what it saved."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nai_server.app.accounts import Caller
from nai_server.app.registry import Registry
from nai_server.app.usage import UsageBook
from nai_server.config import ServerConfig
from nai_server.core import scheduling as sched
from nai_server.core.env import build_job_env
from nai_server.core.spec import parse_size
from nai_server.core.states import ACTIVE, TERMINAL, JobState, transition
from nai_server.core.trees import Limits, TreeError
from nai_server.core.units import format_duration
from nai_server.host import contain, diskspace, jobdir, mounts, outputs, unix
from nai_server.host.gpus import GpuInventory, GpuSnapshot
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
from nai_server.store.atomic import CommitLock
from nai_server.store.blobs import BlobStore
from nai_server.store.db import TinyDbStore

log = logging.getLogger("nai.runtime")

Doc = dict[str, Any]
ARCHIVE_EVERY_SECONDS = 60.0


@dataclass
class TickState:
    """What the last tick learned, kept in memory for the API (derived, not stored)."""

    snapshot: GpuSnapshot | None = None
    # gpu → (pid, memory, the job whose process it is if a job strayed onto it)
    foreign: dict[int, list[tuple[int, int, int | None]]] = field(default_factory=dict)
    waiting: dict[int, str] = field(default_factory=dict)
    est_start: dict[int, float] = field(default_factory=dict)


class JobRuntime:
    """Carries out the scheduler's decisions on this host."""

    def __init__(
        self, config: ServerConfig, store: TinyDbStore, blobs: BlobStore, gpus: GpuInventory,
        launcher: Launcher, lock: CommitLock, clock: Callable[[], float],
        drained: Callable[[], bool], registry: Registry,
        caller_for: Callable[[str], Caller], collector: Executor | None = None,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.store = store
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
        self._last_archive = 0.0
        # Jobs whose process ended and whose outputs are being collected, outside the
        # lock, by helpers running as their owners: job id → (when it ended, how, code,
        # what of it was killed at its end).
        self.collector = collector or ThreadPoolExecutor(2, thread_name_prefix="nai-collect")
        self._collecting: dict[int, Future[tuple[str | None, str | None]]] = {}
        # Kept until the job's end is on disk: a failed write retries it next tick.
        self._ended: dict[int, tuple[float, str, int | None, str | None]] = {}
        self._probe: GpuSnapshot | None = None  # this tick's, for what a job left on a GPU
        self.contain = contain.Containment(config.state)
        self._sweep_due = True  # at start: what a crash left behind
        self._helpers: set[subprocess.Popen[bytes]] = set()  # killed at close
        self._strays: set[tuple[int, int]] = set()  # (job, GPU) seen at the last tick
        jobs = config.jobs
        self.output_limits = Limits(
            max_file_size=parse_size(jobs.max_output_file_size),
            max_entries=jobs.max_output_entries,
            max_total_size=parse_size(jobs.max_output_size))

    def job_dir(self, job_id: int) -> Path:
        return self.jobs_dir / str(job_id)

    # --- the loop ---------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        snapshot = self._probe = self.gpus.probe()
        # settled(): never launch a job whose submission a failed flush may take back.
        with self.lock.settled():
            ended = self._reap(now)
        for job in ended:  # outside the lock: no request waits on a job's files
            self._collecting[job["id"]] = self.collector.submit(self._collect, job)
        with self.lock.settled():
            saved = self._finish_collected()
            hot = self.store.hot_jobs()
            self._observe(snapshot, hot)
            self._schedule(now, hot)
            if now - self._last_archive >= ARCHIVE_EVERY_SECONDS:
                self._archive(now)
                self._last_archive = now
        # Committed (a failed commit raised above): only now may the ends be forgotten.
        for job_id in saved:
            self._collecting.pop(job_id, None)
            self._ended.pop(job_id, None)
        if saved or self._sweep_due:  # cgroups of ended jobs, once their processes are gone
            with self.lock:
                keep = {j["id"] for j in self.store.hot_jobs() if j["state"] in ACTIVE}
            self._sweep_due = not self.contain.sweep(keep)

    def busy(self) -> bool:
        with self.lock:
            return any(j["state"] in {"queued", "starting", "running"}
                       for j in self.store.hot_jobs())

    def close(self) -> None:
        """Stop the collections under way: their jobs stay running in the database, and
        the next start collects their outputs again."""
        for helper in list(self._helpers):
            outputs.kill(helper)
        self.collector.shutdown(wait=True, cancel_futures=True)
        with self.lock:
            keep = {j["id"] for j in self.store.hot_jobs() if j["state"] in ACTIVE}
        self.contain.close(keep)  # a running job keeps its cgroup (it outlives the daemon)

    # --- reaping ----------------------------------------------------------------------

    def _reap(self, now: float) -> list[Doc]:
        """Check every started job; return those whose process has ended and whose
        outputs must now be collected before they end."""
        ended = []
        for job in self.store.hot_jobs():
            if (job["state"] in (JobState.STARTING, JobState.RUNNING)
                    and job["id"] not in self._collecting and self._check(job, now)):
                ended.append(job)
        return ended

    def _check(self, job: Doc, now: float) -> bool:
        job_dir = self.job_dir(job["id"])
        handle = _handle(job)
        if handle is None:
            # The daemon died between "starting" and recording the pid. The wrapper
            # writes its pid first: adopt it if it lives; never start the job again.
            pid = read_wrapper_pid(job_dir)
            if pid is None or never_started(job_dir):  # nothing of the job ran
                self._unstart(job)
                return False
            ticks = proc_start_ticks(pid) if pid else None
            if pid and ticks is not None and session_of(pid) == pid and self._owns(job, pid):
                handle = Handle(pid, ticks)
                job = self.store.update_job(job["id"], {
                    "state": transition(JobState(job["state"]), JobState.RUNNING),
                    "pid": pid, "pid_start": ticks, "started_at": job.get("started_at") or now})
        status, code = self.launcher.status(job_dir, handle)
        if status == "exited" and job["state"] == JobState.STARTING:
            # It ran, and ended while the daemon was down: it ends from running.
            job = self.store.update_job(job["id"], {
                "state": transition(JobState.STARTING, JobState.RUNNING)})
        if status == "running":
            assert handle is not None
            self._enforce_limits(job, handle, now)
            return False
        note = self._leftovers(job, handle)
        stop = job.get("stop") or {}
        if stop.get("kind") == "preempted" and job["state"] == JobState.RUNNING:
            self._requeue(job, stop, now)  # however it ended: it was interrupted
            return False
        if status == "exited":  # it may have ended while the daemon was down
            at = exit_time(job_dir)
            if at is not None:
                now = min(now, max(at, job.get("started_at") or now))
        self._ended[job["id"]] = (now, status, code, note)
        return True

    def _unstart(self, job: Doc) -> None:
        """The daemon died while starting the job, before its wrapper ran: back to the
        queue, without what was built for it (its next start builds it again)."""
        if not job.get("runs"):  # a preempted job's directory holds its checkpoint
            for path in (self.jobs_dir / f".{job['id']}.new", self.job_dir(job["id"])):
                if os.path.lexists(path):
                    shutil.rmtree(path)
        self.store.update_job(job["id"], {
            "state": transition(JobState(job["state"]), JobState.QUEUED), "gpus": [],
            "gpu_uuids": [], "started_at": None})
        log.info("job %s: the daemon stopped while starting it; queued again", job["id"])

    def _leftovers(self, job: Doc, handle: Handle | None) -> str | None:
        """Kill what the job left running (its cgroup, or its session, and its user's
        new processes on its GPUs); what was killed, in words."""
        others = {j["pid"] for j in self.store.hot_jobs()
                  if j["state"] in ACTIVE and j.get("pid") and j["id"] != job["id"]}
        return contain.end_job(
            self.contain, job["id"], handle.pid if handle else None,
            handle.start_ticks if handle else -1, self._owner_uid(job), self._probe,
            job.get("gpus") or (), others)

    def _owner_uid(self, job: Doc) -> int:
        account = None if self.config.personal else unix.unix_account(job["user"])
        return account.pw_uid if account is not None and os.geteuid() == 0 else os.getuid()

    def _owns(self, job: Doc, pid: int) -> bool:
        """Whether a recorded pid is a process of the job's owner: the daemon signals
        it as root, so a pid someone wrote must not name another user's process."""
        if self.config.personal or os.geteuid() != 0:
            return True
        account = unix.unix_account(job["user"])
        return account is not None and proc_uid(pid) == account.pw_uid

    def _finish_collected(self) -> list[int]:
        """End the jobs whose outputs have been collected (or refused); their ids, to
        forget once the ends are committed."""
        saved = []
        for job_id, future in list(self._collecting.items()):
            if not future.done():
                continue
            saved.append(job_id)
            now, status, code, note = self._ended[job_id]
            try:
                tree, problem = future.result()
            except Exception as exc:  # a bug in collecting: the job still ends
                log.exception("job %s: collecting outputs failed", job_id)
                tree, problem = None, str(exc)
            job = self.store.get_job(job_id)
            if job is None or job["state"] not in (JobState.STARTING, JobState.RUNNING):
                continue
            self._end(job, status, code, now, tree, problem, note)
        return saved

    def _end(self, job: Doc, status: str, code: int | None, now: float, tree: str | None,
             problem: str | None, note: str | None = None) -> None:
        stop = job.get("stop") or {}
        if status == "exited":
            final = stop.get("kind") or ("succeeded" if code == 0 else "failed")
            message = None if final != "failed" else f"exit code {code}"
        else:
            final = stop.get("kind") or "lost"
            message = None if stop else (
                "the job's process vanished without an exit status (the machine rebooted, "
                "or it was killed from outside nai)")
        self._finish(job, JobState(final), code, message, now, tree, problem, note)

    def _enforce_limits(self, job: Doc, handle: Handle, now: float) -> None:
        stop = job.get("stop")
        limit = job.get("time_limit")
        if stop is None and limit and job.get("started_at") and now - job["started_at"] > limit:
            self.begin_stop(job, "timed_out", now)
        elif stop and not stop.get("killed") and now >= stop["deadline"]:
            self.launcher.signal(handle, signal.SIGKILL)
            self.contain.kill(job["id"])
            self.store.update_job(job["id"], {"stop": {**stop, "killed": True}})

    def begin_stop(self, job: Doc, kind: str, now: float, **why: Any) -> Doc:
        """SIGTERM to the job's group now; SIGKILL after the grace period. ``why`` is
        kept with the stop (a preemption records the job it makes room for)."""
        grace = self.config.jobs.cancel_grace_seconds
        handle = _handle(job)
        stop = {"kind": kind, "at": now, "deadline": now + grace, "killed": grace <= 0, **why}
        if handle is not None:
            self.launcher.signal(handle, signal.SIGKILL if grace <= 0 else signal.SIGTERM)
        if grace <= 0:
            self.contain.kill(job["id"])
        else:  # what left the job's process group hears it too
            self.contain.signal(job["id"], signal.SIGTERM)
        return self.store.update_job(job["id"], {"stop": stop})

    def _collect(self, job: Doc) -> tuple[str | None, str | None]:
        """The job's output tree, read by a helper running as its owner: (tree id, None),
        (None, why not), or (None, None) when it left no output/."""
        output = self.job_dir(job["id"]) / "output"
        try:
            os.lstat(output)
        except FileNotFoundError:
            return None, None
        started = time.monotonic()
        try:
            tree = outputs.collect(self.blobs, output, self.output_limits, self._run_as(job),
                                   self.config.jobs.collect_timeout_seconds, self._helpers)
        except TreeError as exc:
            log.warning("job %s: outputs not collected: %s", job["id"], exc)
            return None, str(exc)
        except Exception as exc:  # keep the job's end even if collecting fails
            log.exception("job %s: outputs not collected", job["id"])
            return None, str(exc)
        finally:
            self.notify()
        log.info("job %s: outputs collected in %.2f s", job["id"], time.monotonic() - started)
        return tree, None

    def _run_as(self, job: Doc) -> outputs.RunAs:
        account = None if self.config.personal else unix.unix_account(job["user"])
        if account is None or os.geteuid() != 0:
            return outputs.RunAs()
        return outputs.RunAs(account.pw_uid, account.pw_gid,
                             tuple(unix.unix_groups(job["user"])))

    def _finish(self, job: Doc, final: JobState, code: int | None, message: str | None,
                now: float, tree: str | None = None, problem: str | None = None,
                note: str | None = None) -> None:
        fields: Doc = {"state": transition(JobState(job["state"]), final), "ended_at": now,
                       "exit_code": code}
        if tree is not None:
            fields["output_tree"] = tree
        elif problem is not None:
            message = f"outputs not collected: {problem}"
        if message or note:
            fields["message"] = "; ".join(m for m in (message, note) if m)
        if final == JobState.SUCCEEDED and job["spec"].get("register_model"):
            fields.update(self._register(job, fields.get("output_tree")))
        self.store.update_job(job["id"], fields)
        log.info("job %s ended: %s (exit %s)", job["id"], final, code)
        try:
            self.registry.collect()  # versions kept only for this job may go now
        except Exception:
            log.exception("registry collection after job %s failed", job["id"])

    def _register(self, job: Doc, output_tree: str | None) -> Doc:
        """`register_model`: the outputs as a new model version. A refusal is noted on
        the job, which still ends as it did."""
        name = job["spec"]["register_model"]
        if output_tree is None:
            return {"message": f"not registered as model {name}: no outputs collected"}
        try:
            version = self.registry.register_output(
                self.caller_for(job["user"]), name, output_tree, group=job.get("group"),
                description=f"outputs of job {job['id']} "
                            f"({job['spec'].get('name') or 'job-' + str(job['id'])})",
                metadata=mounts.output_metadata(job, self.job_dir(job["id"])))
        except Exception as exc:
            log.warning("job %s: outputs not registered as model %s: %s", job["id"], name, exc)
            return {"message": f"not registered as model {name}: {getattr(exc, 'message', exc)}"}
        log.info("job %s: outputs registered as model %s@%s", job["id"], name, version.version)
        return {"registered": f"{name}@{version.version}"}

    def _requeue(self, job: Doc, stop: Doc, now: float) -> None:
        """A preempted job's run has ended: back to the queue, keeping its service so far,
        its submission time (its place by age) and its job directory (its checkpoint)."""
        started = job.get("started_at") or now
        attained = float(job.get("attained") or 0.0) + max(0.0, now - started)
        runs = [*(job.get("runs") or []), [started, now, len(job.get("gpus") or ())]]
        for_job = stop.get("for_job")
        room = f"to let job {for_job} start" if for_job is not None else "for another job"
        killed = "; it did not exit within the grace period and was killed" if stop.get(
            "killed") else ""
        self.store.update_job(job["id"], {
            "state": transition(transition(JobState(job["state"]), JobState.PREEMPTED),
                                JobState.QUEUED),
            "attained": attained, "runs": runs, "preemptions": len(runs),
            "pid": None, "pid_start": None, "gpus": [], "gpu_uuids": [], "stop": None,
            "started_at": None, "exit_code": None,
            "message": f"preempted at {_when(stop.get('at', now))} {room}{killed}; requeued "
                       f"with {format_duration(round(attained))} of service"})
        job_dir = self.job_dir(job["id"])
        for name in jobdir.RUN_LEFTOVERS:
            (job_dir / name).unlink(missing_ok=True)
        log.info("job %s preempted %s; requeued", job["id"], room)

    # --- GPUs and planning ------------------------------------------------------------

    def _observe(self, snapshot: GpuSnapshot, hot: list[Doc]) -> None:
        """Which processes on each GPU are not ours (someone bypassing the queue), or are
        a job's on a GPU it was not given (a job that set CUDA_VISIBLE_DEVICES itself:
        without device cgroups, nothing else stops it)."""
        ours = {j["pid"]: j for j in hot if j["state"] in ACTIVE and j.get("pid")}
        by_id = {j["id"]: j for j in ours.values()}
        foreign: dict[int, list[tuple[int, int, int | None]]] = {}
        strayed: set[tuple[int, int]] = set()
        for gpu in snapshot.gpus:
            for proc in gpu.processes:
                job = (ours.get(session_of(proc.pid) or -1) or ours.get(proc.pid)
                       or by_id.get(self.contain.job_of(proc.pid) or -1))
                if job is not None and gpu.index in (job.get("gpus") or ()):
                    continue
                strays = job["id"] if job is not None else None
                foreign.setdefault(gpu.index, []).append((proc.pid, proc.used_memory, strays))
                if strays is None:
                    continue
                strayed.add((strays, gpu.index))
                if (strays, gpu.index) not in self._strays:  # logged once while it lasts
                    log.warning("job %s (pid %s) uses GPU %s, which it was not given",
                                strays, proc.pid, gpu.index)
        self._strays = strayed  # only what is seen now: bounded by the GPUs' processes
        self.state.snapshot = snapshot
        self.state.foreign = foreign

    def _schedule(self, now: float, hot: list[Doc]) -> None:
        # A job whose process has ended gives its GPUs back at once: collecting its
        # outputs needs none, and the next job need not wait for it.
        active = [j for j in hot if j["state"] in ACTIVE and j["id"] not in self._collecting]
        held = {g: j["id"] for j in active for g in j.get("gpus", [])}
        snapshot = self.state.snapshot
        assert snapshot is not None
        views = tuple(
            sched.GpuView(index=g.index, uuid=g.uuid, memory_total=g.memory_total,
                          memory_free=g.memory_free, foreign=g.index in self.state.foreign,
                          held_by=held.get(g.index))
            for g in snapshot.gpus)
        running = tuple(
            sched.RunningJob(id=j["id"], user=j["user"], group=j.get("group"),
                             gpus=tuple(j.get("gpus", [])),
                             started_at=j.get("started_at") or now,
                             time_limit=j.get("time_limit"),
                             preemptible=bool(j["spec"].get("preemptible", False)),
                             attained=float(j.get("attained") or 0.0),
                             stopping=bool(j.get("stop")))
            for j in active)
        queued = sorted((j for j in hot if j["state"] == JobState.QUEUED),
                        key=lambda j: (j["submitted_at"], j["id"]))
        queued = self._drop_failed_dependencies(queued, now)
        finished = self._finished_deps(queued)
        queue = [
            sched.QueuedJob(id=j["id"], user=j["user"], group=j.get("group"),
                            gpus=j["spec"].get("gpus", 1), gpu_memory=j["spec"].get("gpu_memory"),
                            submitted_at=j["submitted_at"], time_limit=j.get("time_limit"),
                            priority=j["spec"].get("priority", "normal"),
                            after=tuple(j["spec"].get("after", ())),
                            after_ok=tuple(j["spec"].get("after_ok", ())),
                            preemptible=bool(j["spec"].get("preemptible", False)),
                            attained=float(j.get("attained") or 0.0))
            for j in queued]
        cluster = sched.Cluster(gpus=views, running=running,
                                cpu_slots=self.config.scheduler.cpu_slots,
                                drained=self.drained())
        plan = sched.plan(queue, cluster, now, finished=finished,
                          policy=self.config.scheduler.policy,
                          accounting=self.usage.accounting(now, hot), tuning=self.tuning)
        waiting = {k: str(v) for k, v in plan.waiting.items()}
        est_start = dict(plan.est_start)
        by_id = {j["id"]: j for j in queued}
        by_active = {j["id"]: j for j in active}
        for victim in plan.preempt:
            self._preempt(by_active[victim], plan.starts, now)
        for start in plan.starts:
            holders = {held[g] for g in start.gpus if g in held}
            if holders:
                # Its GPUs are being freed for it (preemption): launch once they are;
                # the next plans keep them for it meanwhile.
                waiting[start.job_id] = str(sched.WaitReason.RESOURCES)
                est_start[start.job_id] = max(self._stop_deadline(h, now) for h in holders)
                continue
            self._launch(by_id[start.job_id], start.gpus, snapshot, now)
        self.state.waiting = waiting
        self.state.est_start = est_start

    def _preempt(self, job: Doc, starts: tuple[sched.Start, ...], now: float) -> None:
        """Stop a running job so that a job ahead of it can start; it will be requeued."""
        if job["state"] != JobState.RUNNING or job.get("stop"):
            return
        mine = set(job.get("gpus") or ())
        for_job = next((s.job_id for s in starts if mine.intersection(s.gpus)), None)
        room = f"job {for_job}" if for_job is not None else "another job"
        job = self.begin_stop(job, "preempted", now, for_job=for_job)
        self.store.update_job(job["id"], {"message": (
            f"being preempted to let {room} start: SIGTERM now (checkpoint and exit), SIGKILL "
            f"after {format_duration(round(self.config.jobs.cancel_grace_seconds))}; "
            f"it will be requeued")})
        log.info("job %s: preempting it for %s", job["id"], room)

    def _stop_deadline(self, job_id: int, now: float) -> float:
        doc = self.store.get_job(job_id)
        stop = (doc or {}).get("stop") or {}
        return float(stop.get("deadline", now))

    def _finished_deps(self, queued: list[Doc]) -> dict[int, bool]:
        deps = {d for j in queued for d in (*j["spec"].get("after", ()),
                                             *j["spec"].get("after_ok", ()))}
        finished = {}
        for dep in deps:
            doc = self.store.get_job(dep)
            if doc is not None and doc["state"] in TERMINAL:
                finished[dep] = doc["state"] == JobState.SUCCEEDED
        return finished

    def _drop_failed_dependencies(self, queued: list[Doc], now: float) -> list[Doc]:
        """`after_ok` on a job that did not succeed: cancel, saying which and why."""
        keep = []
        for job in queued:
            failed = None
            for dep in job["spec"].get("after_ok", ()):
                doc = self.store.get_job(dep)
                if doc is not None and doc["state"] in TERMINAL and doc["state"] != "succeeded":
                    failed = doc
                    break
            if failed is None:
                keep.append(job)
                continue
            self.store.update_job(job["id"], {
                "state": transition(JobState.QUEUED, JobState.CANCELLED), "ended_at": now,
                "message": f"dependency job {failed['id']} ended {failed['state']}, "
                           f"and this job ran only after its success (after_ok)"})
        if len(keep) < len(queued):
            self.registry.collect()
        return keep

    # --- launching --------------------------------------------------------------------

    def _launch(self, job: Doc, gpus: tuple[int, ...], snapshot: GpuSnapshot,
                now: float) -> None:
        uuids = {g.index: g.uuid for g in snapshot.gpus}
        job = self.store.update_job(job["id"], {
            "state": transition(JobState.QUEUED, JobState.STARTING), "gpus": list(gpus),
            "gpu_uuids": [uuids.get(i, "") for i in gpus], "started_at": now})
        # On disk before the process exists: a daemon killed after the launch must come
        # back knowing it started the job (and adopt it), never queue it to run again.
        self.store.storage.commit()
        try:
            request = self._prepare(job, gpus)
            handle = self.launcher.start(request)
        except Exception as exc:
            log.exception("job %s could not start", job["id"])
            self.store.update_job(job["id"], {
                "state": transition(JobState.STARTING, JobState.FAILED), "ended_at": now,
                "message": "could not start: server disk full" if diskspace.is_disk_full(exc)
                           else f"could not start: {exc}"})
            self.registry.collect()
            return
        self.store.update_job(job["id"], {
            "state": transition(JobState.STARTING, JobState.RUNNING),
            "pid": handle.pid, "pid_start": handle.start_ticks})
        log.info("job %s started on GPUs %s (pid %s)", job["id"], list(gpus), handle.pid)

    def _prepare(self, job: Doc, gpus: tuple[int, ...]) -> LaunchRequest:
        """The job's own directory, a writable copy of its code, its environment.

        The directory is made (or made safe to run in again) by `jobdir.make`."""
        job_dir = self.job_dir(job["id"])
        account = None if self.config.personal else unix.unix_account(job["user"])
        uid = gid = None
        groups: tuple[int, ...] = ()
        if account is not None and os.geteuid() == 0:
            uid, gid = account.pw_uid, account.pw_gid
            groups = tuple(unix.unix_groups(job["user"]))
        jobdir.make(job, job_dir, self.blobs, uid, gid, personal=self.config.personal)
        dirs = {f"{kind}_dir": str(job_dir / kind) for kind in mounts.MOUNTS if job.get(kind)}
        home = account.pw_dir if account else os.environ.get("HOME", "/")
        base = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": home, "USER": job["user"], "LOGNAME": job["user"],
            "SHELL": "/bin/sh", "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",  # logs arrive as they are printed
        }
        env = build_job_env(job_id=job["id"], job_dir=str(job_dir), gpu_indices=gpus,
                            user_env=job["spec"].get("env", {}), base_env=base, **dirs)
        return LaunchRequest(job_id=job["id"], job_dir=job_dir, command=job["spec"]["command"],
                             env=env, cwd=job_dir / "code", uid=uid, gid=gid, groups=groups,
                             cgroup=self.contain.create(job["id"]))

    # --- history ----------------------------------------------------------------------

    def _archive(self, now: float) -> None:
        horizon = now - self.config.jobs.archive_after_hours * 3600
        old = [j["id"] for j in self.store.hot_jobs()
               if j["state"] in TERMINAL and (j.get("ended_at") or now) <= horizon]
        if old:
            self.store.archive_jobs(old, now)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _handle(job: Doc) -> Handle | None:
    return Handle(job["pid"], job.get("pid_start", -1)) if job.get("pid") else None
