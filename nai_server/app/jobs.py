"""Job use cases behind the API: submit, list, show, cancel, logs, metrics, outputs,
and the GPU view. Visibility follows DESIGN §3: every job is listed for everyone
(like squeue); logs, metrics and outputs only for the owner, the owner's group when
submitted for one, and admins; only the owner or an admin cancels."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nai_server.app.accounts import Caller
from nai_server.app.active_cap import ActiveCounts
from nai_server.app.job_metrics import MetricsReads
from nai_server.app.listing_cache import ListingCache, Stamp
from nai_server.app.ports import JobStore
from nai_server.app.submit_checks import check_fits, time_limit, with_server_limits
from nai_server.core.job import Job, JobSummary, Pin
from nai_server.core.spec import (
    JobSpec,
    SpecError,
    apply_overrides,
    parse_spec,
    spec_from_dict,
)
from nai_server.core.states import JobState, transition
from nai_server.host import diskspace, jobfiles, unix
from nai_server.host.dry_run import estimate as estimate_start
from nai_server.host.launchers.local import proc_uid
from nai_server.host.runtime import JobRuntime
from nai_server.protocol import (
    Conflict,
    Forbidden,
    ForeignProcess,
    GpuList,
    GpuState,
    Invalid,
    JobInfo,
    JobList,
    JobSubmit,
    MetricsPage,
    NotFound,
)
from nai_server.store.history import JobFilter, job_of

Doc = dict[str, Any]
MAX_PAGE = 1000
HIDDEN = "(hidden)"  # what others see of the values in a job's env


class Jobs:
    """The job-facing half of the service; the runtime does the running."""

    def __init__(self, runtime: JobRuntime, notify: Any) -> None:
        self.runtime = runtime
        self.registry = runtime.registry
        self.store = runtime.store
        self.records: JobStore = runtime.jobs  # the same store, as typed job records
        self.lock = runtime.lock
        self.clock = runtime.clock
        self.config = runtime.config
        self.notify = notify
        self.listings = ListingCache()
        # Submit rules (plugins) see each job first, their changes then checked as any spec.
        self.screen: Any = lambda _caller, spec: spec
        # GPU → (service, user) of the replicas holding GPUs (set by the use cases).
        self.gpu_services: Any = dict
        self.metric_reads = MetricsReads()
        self.active = ActiveCounts(self.store)  # jobs.max_active_per_user's counts

    # --- views ------------------------------------------------------------------------

    @staticmethod
    def may_read(caller: Caller, job: Job | JobSummary) -> bool:
        return (caller.admin or job.user == caller.user
                or (job.group is not None and job.group in caller.groups))

    def _info(self, caller: Caller, job: Job) -> JobInfo:
        state = self.runtime.state
        # Everyone sees the queue; only those who may read a job see its code, the trees
        # of its dataset and model, its outputs and the values of its environment,
        # where people keep tokens.
        readable = self.may_read(caller, job)
        spec = job.spec_doc.copy()
        if not readable and spec.get("env"):
            spec["env"] = dict.fromkeys(spec["env"], HIDDEN)
        pins = {kind: None if pin is None else pin.to_doc() if readable else
                {"name": pin.name, "version": pin.version}
                for kind, pin in (("dataset", job.dataset), ("model", job.model))}
        queued = job.state == JobState.QUEUED
        return JobInfo(
            id=job.id, name=job.name, user=job.user, group=job.group, state=job.state.value,
            reason=state.waiting.get(job.id) if queued else None,
            est_start=state.est_start.get(job.id) if queued else None,
            message=job.message, spec=spec,
            code_tree=job.code_tree if readable else None,
            gpus=list(job.gpus), submitted_at=job.submitted_at,
            started_at=job.started_at if not queued else None,
            ended_at=job.ended_at, exit_code=job.exit_code,
            output_tree=job.output_tree if readable else None,
            dataset=pins["dataset"], model=pins["model"], registered=job.registered,
        )

    def _fetch(self, job_id: int) -> Job:
        """The job, for reading: a hot one under the lock, an archived one from the
        archive files without it (a job archived in between is in its file by then)."""
        with self.lock:
            job = self.records.get_hot(job_id)
            months = self.store.archived_months_of(job_id) if job is None else []
        if job is None:
            job = self.store.history.job(job_id, months)
        if job is None:
            raise NotFound(f"no job {job_id} on this server (see `nai jobs --all`)")
        return job

    def _readable(self, caller: Caller, job_id: int) -> Job:
        job = self._fetch(job_id)
        if not self.may_read(caller, job):
            raise Forbidden(f"job {job_id} belongs to {job.user}; only they, their group "
                            f"(for group jobs) and admins may read its logs and outputs")
        return job

    # --- submit -----------------------------------------------------------------------

    @staticmethod
    def parse(body: JobSubmit) -> JobSpec:
        """The submitted spec, validated: YAML text (errors name its lines) or fields,
        then the command line's overrides."""
        try:
            if body.spec_yaml is not None:
                if body.spec is not None:
                    raise Invalid("send the spec as `spec` or as `spec_yaml`, not both")
                spec = parse_spec(body.spec_yaml, source=body.source)
            elif body.spec is not None:
                spec = spec_from_dict(body.spec, source="spec")
            else:
                raise Invalid("a job needs a spec: `spec` (fields) or `spec_yaml` (nai.yaml)")
            if body.overrides:
                spec = apply_overrides(spec, source="command line", **body.overrides)
        except SpecError as exc:
            raise Invalid(str(exc), details={"field": exc.field, "line": exc.line}) from exc
        return spec

    def submit(self, caller: Caller, spec: JobSpec, code_tree: str | None, *,
               code_from_model: bool = False, dry_run: bool = False,
               made_by: str | None = None) -> JobInfo:
        """Queue a job. Its dataset and model are pinned now to the exact versions the
        caller may read (the job keeps them however the names move later). `dry_run`:
        checked exactly so, but nothing is created; the answer is the job as it would
        be queued (id 0), with when it would start (see `would_start`). `made_by`: the
        server's own request that submits it (Job.made_by), never a user's spec."""
        spec = self.screen(caller, spec)
        check_fits(self.runtime, spec.gpus, spec.gpu_memory)
        if spec.nodes > 1 and self.config.launcher != "slurm":
            raise Invalid(f"nodes: {spec.nodes} needs a server that runs jobs on Slurm; "
                          f"this one runs them on itself: leave nodes out")
        if code_from_model and (spec.model is None or code_tree is not None):
            raise Invalid("code_from_model runs the files of the spec's `model` as the code: "
                          "give `model` and no code_tree")
        if spec.group is not None and spec.group not in caller.groups:
            raise Forbidden(f"{caller.user} is not a member of group {spec.group!r}")
        if spec.priority == "high" and not caller.admin:
            raise Forbidden("priority: high is for admins; use normal or low")
        limit = time_limit(self.config.jobs, spec.time_limit)
        spec = with_server_limits(self.config.jobs, spec)
        # Only a tree the caller may read (DESIGN §6); another's answers as an unknown one.
        if code_tree is not None and not self.registry.may_read_tree(caller, code_tree):
            raise Invalid(f"code tree {code_tree!r} is not on the server; upload it first "
                          f"(POST /v1/trees)")
        cap = self.config.jobs.max_active_per_user
        with self.lock:
            # Dry runs too: a job that would be refused says so. A preempted job's
            # requeue never comes here: it is the same job, counted all along.
            self.active.check(caller.user, cap)
            for dep in (*spec.after, *spec.after_ok):
                if self.records.get(dep) is None:
                    raise Invalid(f"after/after_ok: there is no job {dep}")
            dataset = (self.registry.resolve(caller, "dataset", spec.dataset)
                       if spec.dataset else None)
            model = self.registry.resolve(caller, "model", spec.model) if spec.model else None
            pins = [p for p in (dataset, model) if p is not None]
            if code_from_model:
                assert model is not None  # a spec with code_from_model names a model
                code_tree = model.tree_id
            job = Job(
                id=0, user=caller.user, group=spec.group, state=JobState.QUEUED, spec=spec,
                code_tree=code_tree, submitted_at=self.clock(), time_limit=limit,
                made_by=made_by,
                dataset=None if dataset is None else Pin(dataset.name, dataset.version,
                                                          dataset.tree_id),
                model=None if model is None else Pin(model.name, model.version, model.tree_id))
            if not dry_run:
                job = self.records.insert(job)
                for p in pins:
                    self.registry.record_use(p.kind, p.name, p.version, job.id)
                if cap is not None:
                    self.active.added(caller.user)
                info = self._info(caller, job)
        if dry_run:
            return self.would_start(caller, job)
        self.notify()
        return info

    def would_start(self, caller: Caller, job: Job) -> JobInfo:
        """A job not queued (id 0) as `show` would answer it queued, with when it would
        start (`est_start`: `submitted_at` when at once, None when not known) and why it
        would wait (`reason`), by the plan of today's queue with it added."""
        estimate = estimate_start(self.runtime, job, job.submitted_at)
        return self._info(caller, job).model_copy(update={
            "est_start": estimate.at,
            "reason": str(estimate.reason) if estimate.reason else None})

    # --- list, show, cancel -----------------------------------------------------------

    def list(self, caller: Caller, *, scope: str = "all", state: str | None = None,
             user: str | None = None, limit: int = 100, offset: int = 0,
             before: int | None = None, since: float | None = None) -> JobList:
        """Jobs matching the filters, newest id first: `offset` skips, `before` (the
        `next_before` of the previous page) pages by id, stable however many jobs
        are submitted meanwhile. The hot table is read under the lock; the archives
        only when the page reaches into them, and without the lock (see
        `store.history`). `total` counts the matches ignoring `before` and `offset`,
        from per-month tallies (exact, but for `since`, where it is what the archives
        scanned held, and a job caught mid-archiving after a crash, counted twice)."""
        if state is not None and state not in {s.value for s in JobState}:
            raise Invalid(f"state: unknown {state!r}; one of "
                          f"{', '.join(s.value for s in JobState)}")
        if scope not in ("all", "mine"):
            raise Invalid("scope: 'all' or 'mine'")
        limit = max(1, min(limit, MAX_PAGE))
        want = JobFilter(user=caller.user if scope == "mine" else user, state=state,
                         since=since, before=before)
        every = JobFilter(user=want.user, state=state, since=since)
        with self.lock:
            hot = self.records.hot()
            months = self.store.archived_months(before)
            top = self.store.archived_top(before)
            archived_total = (self.store.archived_count(want.user, state)
                              if since is None else None)
        total = sum(1 for j in hot if every.job(j))
        hot_ids = {j.id for j in hot}
        page_hot = sorted((j for j in hot if want.job(j)), key=lambda j: -j.id)
        need = offset + limit
        if len(page_hot) >= need and page_hot[need - 1].id > top and archived_total is not None:
            page = page_hot[offset:need]  # the newest jobs are all hot: no archive read
        else:
            archived = (job_of(r) for r in self.store.history.rows_matching(want, months)
                        if r[0] not in hot_ids)
            merged = heapq.merge(page_hot, archived, key=lambda j: -j.id)
            page = list(itertools.islice(merged, offset, need))
        if archived_total is None:  # by time: count what the archives hold
            archived_total = sum(1 for r in self.store.history.rows_matching(
                every, self.store.history.months()) if r[0] not in hot_ids)
        return JobList(jobs=[self._info(caller, j) for j in page],
                       total=total + archived_total, offset=offset, limit=limit,
                       next_before=page[-1].id if len(page) == limit else None)

    def list_json(self, caller: Caller, **query: Any) -> bytes:
        """`list`, encoded as JSON; the same listing asked again while the store and
        the plan are unchanged is answered from `listings` (see `listing_cache`)."""
        key = (caller, tuple(sorted(query.items())))
        return self.listings.get(key, self._stamp,
                                 lambda: encode_listing(self.list(caller, **query)))

    def _stamp(self) -> Stamp:
        # What a listing shows besides the store: the plan's reasons and estimates,
        # replaced whole by each tick (compared by value when replaced).
        state = self.runtime.state
        return (*self.store.generation(), state.waiting, state.est_start)

    def show(self, caller: Caller, job_id: int) -> JobInfo:
        info, state = self._info(caller, self._fetch(job_id)), self.runtime.state
        kept = info.reason == "Priority" or (info.state == "queued" and info.id == state.head)
        return info.model_copy(update={"why": state.kept}) if kept else info

    def cancel(self, caller: Caller, job_id: int) -> JobInfo:
        with self.lock:
            job = self.records.get(job_id)
            if job is None:
                raise NotFound(f"no job {job_id} on this server (see `nai jobs --all`)")
            if not (caller.admin or job.user == caller.user):
                raise Forbidden(f"job {job_id} belongs to {job.user}; only they or an "
                                f"admin may cancel it")
            if job.terminal:
                raise Conflict(f"job {job_id} already ended ({job.state})")
            now = self.clock()
            if job.state in (JobState.QUEUED, JobState.PREEMPTED):
                job = self.records.update(
                    job_id, state=transition(job.state, JobState.CANCELLED), ended_at=now,
                    message=f"cancelled by {caller.user}")
                self.registry.collect()
            elif job.stop is None:
                job = self.runtime.begin_stop(job, JobState.CANCELLED, now)
            elif job.stop.kind == JobState.PREEMPTED:
                # Already stopping, but to be requeued: let it end cancelled instead.
                job = self.records.update(
                    job_id, stop=dataclasses.replace(job.stop, kind=JobState.CANCELLED),
                    message=f"cancelled by {caller.user}")
            info = self._info(caller, job)
        self.notify()
        return info

    # --- logs, metrics, outputs -------------------------------------------------------

    def log_dir(self, caller: Caller, job_id: int) -> Path:
        """The directory whose `log` the caller may read (checked: a regular file)."""
        self._readable(caller, job_id)
        job_dir = self.runtime.job_dir(job_id)
        try:
            with jobfiles.open_regular(job_dir, "log"):
                pass
        except jobfiles.UnsafeJobFile as exc:
            raise Conflict(f"job {job_id}'s log is not a regular file any more; ask an "
                           f"admin to look at {job_dir}") from exc
        return job_dir

    @staticmethod
    def read_log(job_dir: Path, offset: int, limit: int) -> bytes:
        """Up to `limit` bytes of the log in `job_dir` (from `log_dir`) from `offset`;
        b"" past its end."""
        return jobfiles.read_range(job_dir, "log", offset, limit)

    @staticmethod
    def log_chunks(job_dir: Path, offset: int) -> Iterator[bytes]:
        """The log in `job_dir` (from `log_dir`) from `offset` up to its size now."""
        return jobfiles.iter_range(job_dir, "log", offset)

    def ended(self, job_id: int) -> bool:
        try:
            return self._fetch(job_id).terminal
        except NotFound:
            return True

    def metrics(self, caller: Caller, job_id: int, since: int = 0) -> MetricsPage:
        """Rows of metrics.jsonl after line `since`, a bounded read (see `job_metrics`)."""
        self._readable(caller, job_id)
        job_dir = self.runtime.job_dir(job_id)
        try:
            with jobfiles.open_regular(job_dir, "metrics.jsonl") as fd:
                if fd is None:
                    return MetricsPage(metrics=[], next=since, skipped=0)
                return self.metric_reads.page(job_id, fd, since)
        except jobfiles.UnsafeJobFile as exc:
            raise Conflict(f"job {job_id}'s metrics.jsonl is not a regular file any more"
                           ) from exc

    def output_tree(self, caller: Caller, job_id: int) -> str:
        job = self._readable(caller, job_id)
        if not job.terminal:
            raise Conflict(f"job {job_id} is {job.state}: outputs are collected when it "
                           f"ends (follow it with `nai logs -f {job_id}`)")
        if not job.output_tree:
            raise NotFound(f"job {job_id} left no outputs" + (
                f" ({job.message})" if job.message else ""))
        return job.output_tree

    def readable(self, caller: Caller, job_id: int) -> Job:
        """The job, if the caller may read it (403 naming its owner if not)."""
        return self._readable(caller, job_id)

    # --- GPUs -------------------------------------------------------------------------

    def gpus(self) -> GpuList:
        cluster = self.runtime.cluster_gpus()  # launcher: slurm: the cluster's GPUs
        if cluster is not None:
            return cluster  # type: ignore[no-any-return]
        state = self.runtime.state
        snapshot = state.snapshot or self.runtime.gpus.probe()
        with self.lock:
            active = [j for j in self.records.hot() if j.active]
            served = self.gpu_services()
        holders = {g: j for j in active for g in j.gpus}
        gpus = []
        for g in snapshot.gpus:
            holder = holders.get(g.index)
            foreign = [ForeignProcess(pid=pid, user=_owner(pid), used_memory=mem, job=job)
                       for pid, mem, job in state.foreign.get(g.index, [])]
            gpus.append(GpuState(
                index=g.index, uuid=g.uuid, name=g.name, memory_total=g.memory_total,
                memory_used=g.memory_used, memory_free=g.memory_free,
                utilization=g.utilization, job=holder.id if holder else None,
                user=holder.user if holder else served.get(g.index, (None, None))[1],
                foreign=foreign, service=served.get(g.index, (None, None))[0]))
        # A disk below the free-space floor is said where people look at the server.
        notes = [n for n in (self.runtime.gpu_note, diskspace.below_floor(self.config)) if n]
        return GpuList(source=snapshot.source, note="; ".join(notes) or None,
                       gpus=gpus, cpu_slots=self.config.scheduler.cpu_slots,
                       cpu_slots_used=sum(1 for j in active if not j.gpus))


def encode_listing(listing: JobList) -> bytes:
    try:
        return listing.model_dump_json().encode()
    except ValueError:  # a lone surrogate (from a JSON escape) pydantic will not encode
        return json.dumps(listing.model_dump(mode="json")).encode()


def _owner(pid: int) -> str | None:
    uid = proc_uid(pid)
    return None if uid is None else unix.user_name(uid) or str(uid)
