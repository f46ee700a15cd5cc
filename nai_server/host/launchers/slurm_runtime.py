"""The run loop with `launcher: slurm`: Slurm schedules, nai shows what it decides.

Everything but scheduling and starting stays as with the local launcher (job
directories, logs, metrics, outputs collected as the owner, registries). A queued job
is submitted to Slurm at once (sbatch as its owner) unless its owner's quotas hold it
in nai's queue (QuotaGPUs, QuotaHours), and stays `queued` in nai, with Slurm's pending
reason as its wait reason, until Slurm runs it; its end is read from squeue, or from
sacct once squeue has forgotten it. From Slurm's start to its end, as the poll sees
them, it is charged to the usage book for the GPUs it asked for on all its nodes.

Nothing is submitted twice, even across a daemon killed mid-submit: before sbatch the
daemon writes `slurm.job` in the job's directory (root's, the owner cannot touch it)
saying it is submitting, and after, the Slurm id. A restarted daemon that finds
"submitting" looks the job up by its name (nai-<daemon key>-<id>-<run>, checked to
belong to the job's owner) before it submits anything."""

from __future__ import annotations

import dataclasses
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nai_server.core import sched_types, scheduling
from nai_server.core.job import Job, Stop
from nai_server.core.states import JobState, transition
from nai_server.host import jobdir, unix
from nai_server.host.collection import Ended
from nai_server.host.lanes import Lanes
from nai_server.host.launchers import slurm_gpus, slurm_record, slurm_text
from nai_server.host.launchers.local import Handle, LaunchRequest
from nai_server.host.launchers.slurm import SlurmClient, SlurmError, daemon_key
from nai_server.host.launchers.slurm_record import Record
from nai_server.host.launchers.slurm_text import SlurmJob
from nai_server.host.runtime import JobRuntime, queued_view
from nai_server.store.blobs import BlobStore

if TYPE_CHECKING:
    from nai_server.host.launchers.slurm_replicas import SlurmReplicaHost

log = logging.getLogger("nai.slurm")

COLLECT_WORKERS = 6  # outputs of ended jobs collected at once
SUBMIT_WORKERS = 4  # sbatch calls under way at once (slurmctld takes them in turn)
NODES_EVERY = 5.0  # seconds between two reads of the cluster's nodes for `nai gpus`


class SlurmRuntime(JobRuntime):
    """JobRuntime whose jobs Slurm schedules and runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A cluster ends many more jobs a second than one server: more of their outputs
        # are collected at once (each by a helper process as the job's owner).
        kwargs.setdefault("collector", Lanes(COLLECT_WORKERS, "nai-collect"))
        super().__init__(*args, **kwargs)
        self.slurm = SlurmClient(self.config.slurm)
        self.key = daemon_key(self.config.state)
        self.view: dict[int, SlurmJob] = {}  # by Slurm id, from the last squeue (+ sacct)
        self._polled: float | None = None  # when that squeue ran
        self._fresh = False  # whether this tick polled: only then may a job end
        self._complete = True  # whether sacct answered for the jobs squeue forgot
        self._watch: set[int] | None = None  # Slurm ids last seen alive (None: first poll)
        # Slurm id -> nai job id, from the jobs' records (never from Slurm's job names).
        self._known: dict[int, int] = {}
        self._submitted: dict[int, float] = {}  # nai id -> when (this process) submitted it
        self._to_submit: list[int] = []
        # For `nai gpus`: when read, the nodes, the jobs running on them, and what failed.
        self._nodes: tuple[float, list[slurm_gpus.Node], list[SlurmJob], str | None] | None \
            = None
        self._submitter = ThreadPoolExecutor(SUBMIT_WORKERS, thread_name_prefix="nai-sbatch")
        self.replicas: SlurmReplicaHost | None = None  # services' replicas, also polled
        self._poll_now = False

    def replica_host(self, root: Path, blobs: BlobStore, personal: bool) -> Any:
        """Services' replicas as Slurm jobs, watched by this runtime's poll."""
        from nai_server.host.launchers.slurm_replicas import SlurmReplicaHost

        self.replicas = SlurmReplicaHost(root, blobs, personal, self)
        return self.replicas

    @property
    def polled_at(self) -> float | None:
        """When the squeue of the current `view` ran (this runtime's clock)."""
        return self._polled

    def poll_soon(self) -> None:
        """A replica was submitted: squeue on the next tick, which comes now."""
        self._poll_now = True
        self.notify()

    def close(self) -> None:
        self._submitter.shutdown(wait=True, cancel_futures=True)
        super().close()

    def cluster_gpus(self) -> Any:
        """The cluster's GPUs, node by node, and who holds each (`nai gpus`): the nodes
        and the whole queue (the only read of it) at most every NODES_EVERY seconds,
        from the API's threads, and only while someone asks."""
        now = self.clock()
        cached = self._nodes
        if cached is None or now - cached[0] >= NODES_EVERY:
            try:
                cached = (now, slurm_gpus.parse_nodes(self.slurm.nodes()),
                          list(self.slurm.queue().values()), None)
            except SlurmError as exc:
                cached = (now, cached[1] if cached else [], cached[2] if cached else [],
                          f"cannot read Slurm's nodes: {exc}")
            self._nodes = cached
        with self.lock:
            active = [j for j in self.jobs.hot() if j.active]
        users = {j.id: j.user for j in active}
        return slurm_gpus.listing(
            cached[1], cached[2], dict(self._known).get, users.get,
            self.gpus.source, self.config.scheduler.cpu_slots,
            sum(1 for j in active if not j.spec.gpus), note=cached[3],
            nai_service=self.replicas.service_of if self.replicas is not None
            else lambda _: None)

    def running_view(self, job: Job, now: float) -> sched_types.RunningJob:
        """A job Slurm runs holds what it asked for, `--gres=gpu:N` on each of its
        nodes: nai knows how many GPUs, not which. They are its owner's and group's
        held GPUs (/v1/usage, a plan's quota count) as a local job's placed ones are."""
        held = super().running_view(job, now)
        return dataclasses.replace(held, gpus_elsewhere=_asked(job))

    # --- the loop ---------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self._poll(now)
        super().tick(now)
        self._submit_queued(now)

    def _poll(self, now: float) -> None:
        """squeue (at most every `slurm.poll_seconds`, and at once after a submit) for
        this daemon's jobs only, and sacct for those that ended. Outside the lock."""
        self._fresh = False
        every = self.config.slurm.poll_seconds
        if self._polled is not None and now - self._polled < every and not self._to_poll() \
                and not self._poll_now:
            return
        self._poll_now = False
        with self.lock:
            hot = self.jobs.hot()
        wanted, ids, names = self._asked(hot)
        try:
            view = self.slurm.jobs(ids, names) if ids or names else {}
        except SlurmError as exc:
            log.warning("cannot read the Slurm queue: %s", exc)
            return
        # Exit codes, and jobs squeue forgot, come from accounting. Without its answer a
        # job squeue forgot is not known to be gone: the others go on, and those wait
        # (a wrong slurm.accounting says so in the log).
        ended = [i for i in wanted if i not in view or view[i].phase == "ended"]
        self._complete = True
        if ended:
            try:
                view.update(self.slurm.ended(ended, since=min(wanted[i] for i in ended)))
            except SlurmError as exc:
                log.warning("cannot read ended jobs from Slurm's accounting: %s", exc)
                self._complete = False
        # Ran and ended, accounting silent (not yet, or not at all): the exit code from
        # slurmctld while it holds the job; else it is still ending, for nai.
        unknown = [i for i in ended if (sj := view.get(i)) is not None and sj.start is not None
                   and sj.exit_code is None and sj.state not in slurm_text.ENDED_AS]
        codes = self.slurm.exit_codes(unknown) if unknown else {}
        for slurm_id in unknown:
            sj, code = view[slurm_id], codes.get(slurm_id)
            view[slurm_id] = dataclasses.replace(sj, state="COMPLETING") if code is None \
                else dataclasses.replace(sj, exit_code=code)
        # Watched: the live Slurm jobs of nai's records, not those a name lookup found
        # (anyone may name a job like nai's; one adopted is added as it is adopted).
        self._watch = {i for i, sj in view.items() if sj.phase != "ended" and i in self._known}
        self.view, self._polled, self._fresh = view, now, True
        self._submitted = {k: at for k, at in self._submitted.items() if at >= now}

    def _asked(self, hot: list[Job]) -> tuple[dict[int, float], list[int], list[str]]:
        """What squeue is asked: the Slurm ids of the jobs nai still waits for (also
        returned alone, with when nai took each job: sacct needs look no further back),
        the names of those killed mid-submit, and the Slurm jobs last seen alive whose
        nai job has ended (strays to cancel). The first poll also asks for the ended
        jobs' own, after a restart that may have come before a cancel."""
        wanted: dict[int, float] = {}
        names: list[str] = []
        ids = set(self._watch or ())
        known = {i: job_id for i, job_id in self._known.items() if i in ids}
        for job in hot:
            if job.terminal and self._watch is not None:
                continue
            record = self._record(job.id)
            if record is None:
                continue
            if record.slurm_id is not None:
                ids.add(record.slurm_id)
                known[record.slurm_id] = job.id
                if not job.terminal:
                    wanted[record.slurm_id] = job.submitted_at
            elif not job.terminal and record.run == len(job.runs):
                names.append(self._name(job))
        self._known = known
        if self.replicas is not None:  # services' replicas: never a job's, never a stray
            replica_ids, replica_names = self.replicas.asked()
            ids |= replica_ids
            names += replica_names
        return wanted, sorted(ids), names

    def _to_poll(self) -> bool:
        return any(at >= (self._polled or 0) for at in self._submitted.values())

    # --- the jobs' records ------------------------------------------------------------

    def _record(self, job_id: int) -> Record | None:
        return slurm_record.read(self.job_dir(job_id))

    def _write_record(self, job_id: int, run: int, slurm_id: int | None) -> None:
        slurm_record.write(self.job_dir(job_id), run, slurm_id)

    def _name(self, job: Job) -> str:
        return f"nai-{self.key}-{job.id}-{len(job.runs)}"

    def _owner_matches(self, job: Job, sj: SlurmJob) -> bool:
        """A Slurm job is this nai job's only if its owner runs it: anyone on the cluster
        may name a job like ours."""
        if self.config.personal or os.geteuid() != 0:
            return sj.uid is None or sj.uid == os.getuid()
        account = unix.unix_account(job.user)
        return account is not None and sj.uid == account.pw_uid

    def _slurm_job(self, job: Job) -> tuple[Record | None, SlurmJob | None]:
        record = self._record(job.id)
        if record is None or record.run != len(job.runs):
            return None, None
        if record.slurm_id is None:  # killed mid-submit: did sbatch get through?
            name = self._name(job)
            found = [sj for sj in self.view.values()
                     if sj.name == name and self._owner_matches(job, sj)]
            if not found:
                return record, None
            sj = min(found, key=lambda s: s.slurm_id)
            self._write_record(job.id, record.run, sj.slurm_id)
            self._known[sj.slurm_id] = job.id
            if self._watch is not None:
                self._watch.add(sj.slurm_id)
            log.info("job %s: adopted Slurm job %s", job.id, sj.slurm_id)
            return Record(record.run, sj.slurm_id), sj
        seen = self.view.get(record.slurm_id)
        return record, seen if seen is not None and self._owner_matches(job, seen) else None

    def _forgotten(self, job: Job) -> bool:
        """Whether Slurm does not know a job given to it (or tried) before the last poll:
        a poll that may predate the submission proves nothing."""
        return self._fresh and self._complete and \
            self._submitted.get(job.id, float("-inf")) < (self._polled or 0)

    # --- queued jobs: submit, wait, start ---------------------------------------------

    def _schedule(self, now: float, hot: list[Job]) -> list[Future[LaunchRequest]]:
        """Submit the queued jobs Slurm may run, in submission order, unless their
        owners' quotas hold them (`_quota_holds`); none is built here (sbatch does)."""
        queued = sorted((j for j in hot if j.state == JobState.QUEUED),
                        key=lambda j: (j.submitted_at, j.id))
        queued = self._drop_failed_dependencies(queued, now)
        finished = self.finished_dependencies(queued)
        waiting: dict[int, str] = {}
        handed: list[Job] = []  # given to Slurm and still queued in nai's `hot`
        ready: list[Job] = []  # may be submitted, quotas permitting
        self._to_submit = []
        for job in queued:
            record, sj = self._slurm_job(job)
            if sj is None:
                if record is not None and not self._forgotten(job):
                    waiting[job.id] = "Submitted"
                    handed.append(job)
                    continue
                deps = (*job.spec.after, *job.spec.after_ok)
                if any(d not in finished for d in deps if self.jobs.get(d) is not None):
                    waiting[job.id] = str(sched_types.WaitReason.DEPENDENCY)
                elif self.drained():
                    waiting[job.id] = str(sched_types.WaitReason.DRAINED)
                else:
                    ready.append(job)
            elif sj.phase == "pending":
                waiting[job.id] = sj.reason if sj.reason not in ("", "None") else "Submitted"
                handed.append(job)
            elif sj.start is None and sj.phase == "ended":  # ended without running
                self.jobs.update(job.id, state=transition(job.state, JobState.CANCELLED),
                                 ended_at=sj.end or now,
                                 message=f"Slurm ended it before it ran ({sj.state})")
                self.registry.collect()
            else:  # running, or ran and ended since the last look: reaped next tick
                self.jobs.update(
                    job.id, state=transition(transition(job.state, JobState.STARTING),
                                             JobState.RUNNING),
                    started_at=min(now, sj.start or now), gpus_elsewhere=_asked(job),
                    message=f"Slurm job {sj.slurm_id} on {sj.nodes or 'its nodes'}")
                handed.append(job)
                log.info("job %s running as Slurm job %s", job.id, sj.slurm_id)
        holds = self._quota_holds(now, hot, handed, ready)
        for job in ready:
            if job.id in holds:
                waiting[job.id] = str(holds[job.id])
            else:
                waiting[job.id] = "Submitting"
                self._to_submit.append(job.id)
        self._cancel_strays()
        self.state.waiting = waiting
        self.state.est_start = {}
        return []

    def _quota_holds(self, now: float, hot: list[Job], handed: list[Job],
                     ready: list[Job]) -> dict[int, sched_types.WaitReason]:
        """The jobs of `ready` that their owners' quotas keep in nai's queue, as the
        planner would on one server (QuotaGPUs, QuotaHours): counted against max_gpus
        are the GPUs of their jobs Slurm runs or holds pending (`handed`: it will run
        them, nai no longer decides when), their replicas Slurm runs, and the jobs
        ahead of them let through now. Once enough of theirs end, they go.

        The usage book is brought up to `now` every tick, jobs ready or not: a job that
        ended while none was would otherwise be archived (charged by no pass), and a
        replica's end charged up to whenever the next one came."""
        _, cluster, accounting = self.plan_inputs(now, hot)
        if not ready or not accounting.quotas:
            return {}
        held = [*cluster.running, *(self.running_view(j, now) for j in handed)]
        asked = [dataclasses.replace(queued_view(j), gpus=_asked(j)) for j in ready]
        return scheduling.quota_holds(asked, held, accounting)

    def _cancel_strays(self) -> None:
        """Slurm jobs of ours whose nai job ended without them (cancelled while queued):
        found from Slurm's side, so a tick costs the jobs Slurm runs, not nai's history.
        Which nai job a Slurm job is comes from the jobs' records (root's), never from
        its name, which anyone can make look like ours."""
        for sj in self.view.values():
            job_id = self._known.get(sj.slurm_id)
            if sj.phase == "ended" or job_id is None:
                continue
            job = self.jobs.get(job_id)
            record = self._record(job.id) if job is not None and job.terminal else None
            if job is None or record is None or record.slurm_id != sj.slurm_id:
                continue
            try:
                self.slurm.cancel(sj.slurm_id)
                log.info("job %s ended: Slurm job %s cancelled", job.id, sj.slurm_id)
            except SlurmError as exc:
                log.warning("job %s: %s", job.id, exc)

    def _submit_queued(self, now: float) -> None:
        """sbatch each job the last plan chose, outside the lock (building a job's
        directory and Slurm's answer both take time), SUBMIT_WORKERS at once: a burst
        of small jobs waits for Slurm, not for one sbatch after another."""
        todo, self._to_submit = self._to_submit, []
        jobs = []
        for job_id in todo:
            with self.lock:
                job = self.jobs.get(job_id)
            if job is None or job.state != JobState.QUEUED:
                continue
            # Until a poll after this moment has not seen it, the job counts as submitted.
            self._submitted[job.id] = now
            jobs.append(job)
        if len(jobs) == 1:
            self._submit_one(jobs[0], now)
        elif jobs:
            list(self._submitter.map(lambda j: self._submit_one(j, now), jobs))
        if todo:
            self.notify()  # its start is read on the next poll

    def _submit_one(self, job: Job, now: float) -> None:
        try:
            slurm_id = self._submit(job)
        except SlurmError as exc:
            if slurm_text.refused(str(exc)):
                self._fail(job, f"Slurm refused it: {exc}", now)
            else:  # slurmctld away or slow: the record says "submitting"; next tick
                log.warning("job %s not submitted yet: %s", job.id, exc)
            return
        except Exception as exc:
            log.exception("job %s could not be submitted", job.id)
            self._fail(job, f"could not submit it to Slurm: {exc}", now)
            return
        with self.lock:
            current = self.jobs.get(job.id)
        if current is None or current.state != JobState.QUEUED:  # cancelled meanwhile
            try:
                self.slurm.cancel(slurm_id)
            except SlurmError as exc:
                log.warning("job %s: %s", job.id, exc)
        log.info("job %s submitted as Slurm job %s", job.id, slurm_id)

    def _submit(self, job: Job) -> int:
        job_dir = self.job_dir(job.id)
        request = jobdir.launch_request(job, (), job_dir, self.blobs, self.config.personal,
                                        cgroup=lambda: None, discard=self.discards)
        self._write_record(job.id, len(job.runs), None)
        log_path = slurm_record.owners_log(job_dir, request.uid, request.gid)
        # Slurm sets CUDA_VISIBLE_DEVICES from the GPUs it gives the job.
        env = {k: v for k, v in request.env.items() if k != "CUDA_VISIBLE_DEVICES"}
        settings = self.config.slurm
        account = settings.accounts.get(job.group) if job.group else None
        sub = slurm_text.Submission(
            name=self._name(job), comment=f"nai job {job.id}", job_dir=str(job_dir),
            log=str(log_path), cwd=str(request.cwd), uid=request.uid, gid=request.gid)
        argv = slurm_text.sbatch_argv(sub, job.spec, job.time_limit, settings.partition,
                                      account, settings.sbatch_args)
        script = slurm_text.batch_script(request.command, request.args, job.spec.nodes)
        slurm_id = self.slurm.submit(argv, script, env)
        try:
            self._write_record(job.id, len(job.runs), slurm_id)
        except BaseException:  # the job is about to fail: it must not run unwatched
            self.slurm.cancel(slurm_id)
            raise
        return slurm_id

    def _fail(self, job: Job, message: str, now: float) -> None:
        with self.lock:
            current = self.jobs.get(job.id)
            if current is None or current.state != JobState.QUEUED:
                return
            self.jobs.update(job.id, state=transition(transition(
                JobState.QUEUED, JobState.STARTING), JobState.FAILED), ended_at=now,
                message=message)
            self.registry.collect()

    # --- running jobs: watch, stop, end -----------------------------------------------

    def _reap(self, hot: list[Job], now: float) -> list[tuple[Job, Ended]]:
        if not self._fresh:
            return []
        return super()._reap(hot, now)

    def _check(self, job: Job, now: float) -> Ended | None:
        record, sj = self._slurm_job(job)
        if sj is None:
            if record is not None and not self._forgotten(job):
                return None
            return Ended(now, "vanished", None, "Slurm no longer knows this job")
        stop = job.stop
        if sj.phase == "running":
            if job.gpus_elsewhere != _asked(job):  # a record from before nai charged them
                job = self.jobs.update(job.id, gpus_elsewhere=_asked(job))
            self._enforce(job, sj, now)
            return None
        kind = slurm_text.ended_as(sj.state)
        if sj.phase == "pending" or kind == JobState.PREEMPTED or (
                stop is not None and stop.kind == JobState.PREEMPTED):
            # Preempted: back to nai's queue. Requeued by Slurm, it is still the same
            # Slurm job (pending again); ended, it is submitted anew as the next run.
            self.endings.requeue(job, stop or Stop(JobState.PREEMPTED, now, now), now)
            if sj.phase == "pending":
                self._write_record(job.id, len(job.runs) + 1, sj.slurm_id)
            return None
        if stop is None and kind is not None:
            self.jobs.update(job.id, stop=Stop(kind, at=now, deadline=now, killed=True))
        note = None if sj.state in ("COMPLETED", "FAILED", "CANCELLED") else f"Slurm: {sj.state}"
        at = min(now, sj.end) if sj.end else now
        return Ended(at, "exited", sj.exit_code, note)

    def _enforce(self, job: Job, sj: SlurmJob, now: float) -> None:
        """nai's own time limit, to the second (Slurm's --time counts whole minutes), and
        the end of a stop's grace period."""
        stop, limit = job.stop, job.time_limit
        if stop is None and limit and job.started_at and now - job.started_at > limit:
            self.begin_stop(job, JobState.TIMED_OUT, now)
        elif stop and not stop.killed and now >= stop.deadline:
            try:
                self.slurm.cancel(sj.slurm_id)
            except SlurmError as exc:
                log.warning("job %s: %s", job.id, exc)
                return
            self.jobs.update(job.id, stop=dataclasses.replace(stop, killed=True))

    def _leftovers(self, job: Job, handle: Handle | None) -> str | None:
        return None  # slurmd ends what a job leaves on its nodes

    def begin_stop(self, job: Job, kind: JobState, now: float,
                   for_job: int | None = None) -> Job:
        """SIGTERM to the job's processes through Slurm now; scancel after the grace
        period (Slurm's own KillWait then stands between its SIGTERM and SIGKILL)."""
        grace = self.config.jobs.cancel_grace_seconds
        stop = Stop(kind, at=now, deadline=now + grace, killed=grace <= 0, for_job=for_job)
        record = self._record(job.id)
        if record is not None and record.slurm_id is not None:
            try:
                self.slurm.cancel(record.slurm_id, None if grace <= 0 else "TERM")
            except SlurmError as exc:  # the deadline's scancel tries again
                log.warning("job %s: %s", job.id, exc)
        return self.jobs.update(job.id, stop=stop)


def _asked(job: Job) -> int:
    """The GPUs a job asks Slurm for: `--gres=gpu:N` on each of its nodes."""
    return job.spec.gpus * job.spec.nodes
