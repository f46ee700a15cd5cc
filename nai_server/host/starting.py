"""The start of a job, in two halves, so that no one's large dataset holds the lock, the
loop or anyone else's start.

A job the plan starts is given its GPUs (starting) and committed at once, under the
lock; its directory (code, dataset and model links) is then built outside the lock, in
its owner's lane (`Lanes`), where a build of a million files waits behind that user's
own work alone. The tick waits a moment for what it began (most builds take
milliseconds: their jobs start in the same tick); whatever is built by then or later is
finished under the settled lock: its cgroup made and its process started, or its end
recorded, worded here once, if the build failed or it was cancelled meanwhile.

Each user's dataset and model versions are laid out once for all their jobs (`Views`);
the views no job has used for a while are swept here too, in a lane of their own."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

from nai_server.app.ports import JobStore
from nai_server.app.registry import Registry
from nai_server.core.job import Job
from nai_server.core.states import JobState, transition
from nai_server.host import diskspace, jobdir, mounts
from nai_server.host.contain import Containment
from nai_server.host.gpus import GpuSnapshot
from nai_server.host.lanes import Lanes
from nai_server.host.launchers.local import Launcher, LaunchRequest
from nai_server.host.views import Views
from nai_server.store.blobs import BlobStore

log = logging.getLogger("nai.runtime")  # a job's start is logged with the rest of the loop

# How long a tick waits, outside the lock, for the job directories it began to build
# (most take milliseconds: their jobs start in the same tick); a longer build (a dataset
# of a million files to link) goes on in its owner's lane and its job starts at a later
# tick, while the loop reaps, enforces limits and schedules the other jobs.
BUILD_WAIT_SECONDS = 1.0
BUILDS_PER_USER = 2
VIEWS_SWEEP_SECONDS = 3600.0


class Starter:
    """Starts the jobs the plan starts: builds their directories in their owners' lanes,
    then, under the settled lock (`finish_builds`), their processes; `unstart` queues
    again a job whose start a stopped daemon cut short. `contain` is read at each start:
    the runtime's containment may be replaced (a host without cgroups)."""

    def __init__(
        self, jobs: JobStore, registry: Registry, launcher: Launcher, *,
        contain: Callable[[], Containment], job_dir: Callable[[int], Path],
        blobs: BlobStore, discards: jobdir.Discards, views_root: Path, personal: bool,
        notify: Callable[[], None],
    ) -> None:
        self.jobs = jobs
        self.registry = registry
        self.launcher = launcher
        self.contain = contain
        self.job_dir = job_dir
        self.blobs = blobs
        self.discards = discards
        self.personal = personal
        self.notify = notify  # wakes the run loop (a build has finished)
        # Jobs starting: their directories being built, outside the lock, in lanes per
        # user (see BUILD_WAIT_SECONDS).
        self._builders = Lanes(BUILDS_PER_USER, "nai-build")
        self._building: dict[int, futures.Future[LaunchRequest]] = {}
        # Each user's dataset and model versions, laid out once for all their jobs.
        self.views = Views(views_root, blobs, personal)
        self._views_swept = 0.0
        self._sweeping: futures.Future[int] | None = None
        # Not waited for at close: a removal cut short leaves a dot-name the next removes.
        self._sweeper = Lanes(1, "nai-views")

    def __contains__(self, job_id: object) -> bool:
        """Whether the job's directory is being built (it has no process yet)."""
        return job_id in self._building

    def close(self) -> None:
        """Stop the builds under way (their jobs stay starting: the next daemon queues
        them again, `unstart`) and the views' sweep."""
        self._builders.shutdown(wait=True, cancel_futures=True)
        self._sweeper.shutdown(wait=False, cancel_futures=True)

    def launch(self, job: Job, gpus: tuple[int, ...], snapshot: GpuSnapshot,
               now: float) -> futures.Future[LaunchRequest]:
        """Give the job its GPUs (starting) and begin building its directory in its
        owner's lane; `finish_builds` starts its process once that is done."""
        uuids = {g.index: g.uuid for g in snapshot.gpus}
        job = self.jobs.update(
            job.id, state=transition(JobState.QUEUED, JobState.STARTING), gpus=gpus,
            gpu_uuids=tuple(uuids.get(i, "") for i in gpus), started_at=now)
        # On disk before the process exists: a daemon killed after the launch must come
        # back knowing it started the job (and adopt it), never queue it to run again.
        self.jobs.commit()
        future = self._builders.submit(job.user, self._build, job, gpus)
        self._building[job.id] = future
        future.add_done_callback(lambda _: self.notify())  # its start is the loop's
        return future

    def wait(self, begun: list[futures.Future[LaunchRequest]]) -> None:
        """Wait, outside the lock, a moment (BUILD_WAIT_SECONDS) for the directories
        this tick began to build; most are made by then."""
        if begun:
            futures.wait(begun, timeout=BUILD_WAIT_SECONDS)

    def built(self) -> bool:
        """Whether a build has finished whose job `finish_builds` has still to start."""
        return any(f.done() for f in self._building.values())

    def _build(self, job: Job, gpus: tuple[int, ...]) -> LaunchRequest:
        """The job's directory and what to start in it (in a lane, without the lock);
        its cgroup is made when it starts."""
        return jobdir.launch_request(
            job, gpus, self.job_dir(job.id), self.blobs, self.personal,
            cgroup=lambda: None, discard=self.discards, views=self.views)

    def sweep_views(self, hot: list[Job], now: float) -> None:
        """Now and then, in a lane of its own, remove the views no job has used for a
        while (views.sweep); never one an active job uses."""
        if now - self._views_swept < VIEWS_SWEEP_SECONDS or (
                self._sweeping is not None and not self._sweeping.done()):
            return
        self._views_swept = now
        in_use = {(j.user, pin.tree_id) for j in hot if j.active
                  for kind in mounts.MOUNTS if (pin := j.pin(kind)) is not None}
        self._sweeping = self._sweeper.submit("views", self.views.sweep, in_use)

    def unstart(self, job: Job) -> None:
        """The daemon died while starting the job, before its wrapper ran: back to the
        queue, without what was built for it (its next start builds it again)."""
        if not job.runs:  # a preempted job's directory holds its checkpoint
            # Its owner could reach output/ and code/: emptied as them (jobdir.Discards).
            job_dir = self.job_dir(job.id)
            for path in (job_dir.with_name(f".{job.id}.new"), job_dir):
                if os.path.lexists(path):
                    self.discards(path, f"job {job.id} is built again at its next start")
        self.jobs.update(job.id, state=transition(job.state, JobState.QUEUED), gpus=(),
                         gpu_uuids=(), started_at=None)
        log.info("job %s: the daemon stopped while starting it; queued again", job.id)

    def finish_builds(self, now: float) -> None:
        """Start the jobs whose directories are built (under the settled lock): their
        process, or their end if the build failed or they were stopped meanwhile."""
        for job_id, future in list(self._building.items()):
            if not future.done():
                continue
            del self._building[job_id]
            job = self.jobs.get(job_id)
            if job is None or job.state != JobState.STARTING:
                continue
            try:
                request = future.result()
            except Exception as exc:
                log.error("job %s could not start", job_id, exc_info=exc)
                self._not_started(job, now, exc)
                continue
            if job.stop is not None:  # cancelled while it was being built
                self._stopped_before_start(job, now)
                continue
            contain = self.contain()
            try:
                request = dataclasses.replace(
                    request, cgroup=contain.create(job.id, job.spec.memory, job.spec.cpus),
                    joins=contain.joins(job.id))
                handle = self.launcher.start(request)
            except Exception as exc:
                log.exception("job %s could not start", job_id)
                self._not_started(job, now, exc)
                continue
            why = contain.unenforced(job.spec.memory, job.spec.cpus)
            # Its time limit counts from now: building its directory was the server's time.
            self.jobs.update(job.id, state=transition(JobState.STARTING, JobState.RUNNING),
                             pid=handle.pid, pid_start=handle.start_ticks, started_at=now,
                             **({"message": why} if why else {}))
            log.info("job %s started on GPUs %s (pid %s)", job.id, list(job.gpus), handle.pid)

    def _not_started(self, job: Job, now: float, exc: Exception) -> None:
        """The job failed to start, for `exc` (its directory or its process)."""
        message = ("could not start: server disk full" if diskspace.is_disk_full(exc)
                   else f"could not start: {exc}")
        self.jobs.update(job.id, state=transition(JobState.STARTING, JobState.FAILED),
                         ended_at=now, message=message)
        self.registry.collect()

    def _stopped_before_start(self, job: Job, now: float) -> None:
        """A job cancelled while its directory was built (only a running job is ever
        preempted or timed out): it ends, none of it having run."""
        self.jobs.update(job.id, state=transition(JobState.STARTING, JobState.CANCELLED),
                         ended_at=now, message="cancelled before it started")
        self.registry.collect()
        log.info("job %s was cancelled while it was being started", job.id)
