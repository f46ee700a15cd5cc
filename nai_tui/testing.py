"""Fakes of the terminal UI's ports, shipped with the code (like httpx's MockTransport):
an in-memory `FakeServerClient` and a `ManualClock` (`FakeTransfers` and the sample
`demo_server()` are in nai_tui.testing_demo).

    fake = demo_server(now=1_700_000_000.0)
    app = NaiApp(lambda entry: fake, clock=ManualClock(1_700_000_000.0),
                 transfers=FakeTransfers())
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import yaml

from nai_server.protocol import (
    API_VERSION,
    MAX_LOG_RANGE,
    TERMINAL_STATES,
    Conflict,
    ConnectionFailed,
    Forbidden,
    GpuList,
    GpuState,
    GroupInfo,
    Invalid,
    JobInfo,
    JobList,
    LogMatches,
    Me,
    MetricsPage,
    NotFound,
    PushedVersion,
    Quota,
    RegistryEntry,
    RegistrySummary,
    RegistryVersion,
    TreeEntryModel,
    TreeInfo,
    UserInfo,
    VersionInfo,
)
from nai_tui.remote.client import ServerClient

GIB = 1 << 30


_T = TypeVar("_T")

class ManualClock:
    """A clock that moves only when told: `clock()` is the time, `advance(s)` moves it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _unfaked(request: httpx.Request) -> httpx.Response:
    return httpx.Response(501, json={"error": {
        "code": "internal", "message": f"FakeServerClient does not fake {request.url.path}"}})


class FakeServerClient(ServerClient):
    """An in-memory server: jobs, GPUs, logs, metrics, outputs, users, groups, trees,
    datasets and models.

    `fail` (a message) makes every call raise ConnectionFailed, as a dropped SSH link
    would; `error` makes every call raise that exception; `gate` (an Event) holds every
    call until it is set, as a slow link would. `max_in_flight` records the most calls
    that ever ran at once (polls must not overlap).
    """

    def __init__(self, name: str = "fake", *, user: str = "alice", admin: bool = False,
                 gpus: int = 4) -> None:
        super().__init__(httpx.Client(transport=httpx.MockTransport(_unfaked),
                                      base_url="http://nai"), name)
        self.user = user
        self.admin = admin
        self.now = 1_700_000_000.0
        self.fail: str | None = None
        self.error: BaseException | None = None
        self.gate: threading.Event | None = None
        self.calls: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False
        self._lock = threading.Lock()
        self._jobs: dict[int, JobInfo] = {}
        self._logs: dict[int, bytes] = {}
        self._metrics: dict[int, list[dict[str, Any]]] = {}
        self._outputs: dict[int, dict[str, bytes]] = {}
        self.blobs: dict[str, bytes] = {}
        self.trees: dict[str, TreeInfo] = {}
        self._registries: dict[tuple[str, str], RegistryEntry] = {}
        self.submitted: list[dict[str, Any]] = []
        self.gpu_list = GpuList(source="fake", gpus=[_gpu(i) for i in range(gpus)],
                                cpu_slots=8, cpu_slots_used=0)
        self._users: dict[str, UserInfo] = {}
        self._groups: dict[str, GroupInfo] = {}
        self._drained = False
        self.put_user(user, admin=admin)

    # --- plumbing ---------------------------------------------------------------------

    def _enter(self, call: str) -> None:
        with self._lock:
            self.calls.append(call)
            if self.fail is not None:
                raise ConnectionFailed(f"{self.name}: {self.fail}")
            if self.error is not None:
                raise self.error
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.gate is not None:
            self.gate.wait(timeout=30)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _do(self, call: str, fn: Callable[..., _T], *args: Any) -> _T:
        self._enter(call)
        try:
            return fn(*args)
        finally:
            self._leave()

    def close(self) -> None:
        self.closed = True

    # --- setting the scene (tests call these) -----------------------------------------

    def add_job(self, name: str = "train", *, user: str | None = None, state: str = "queued",
                gpus: list[int] | None = None, wanted: int = 1, submitted_at: float | None = None,
                started_at: float | None = None, ended_at: float | None = None,
                **fields: Any) -> JobInfo:
        """Put a job on the fake server; returns it."""
        with self._lock:
            job_id = max(self._jobs, default=0) + 1
            spec = {"name": name, "command": "python train.py", "gpus": wanted,
                    "time_limit": "1h", **fields.pop("spec", {})}
            job = JobInfo(id=job_id, name=name, user=user or self.user, group=None, state=state,
                          spec=spec, code_tree=None, gpus=gpus or [],
                          submitted_at=self.now if submitted_at is None else submitted_at,
                          started_at=started_at, ended_at=ended_at, **fields)
            self._jobs[job_id] = job
            self._logs[job_id] = b""
            self._metrics[job_id] = []
            return job

    def update_job(self, job_id: int, **fields: Any) -> JobInfo:
        with self._lock:
            job = self._jobs[job_id].model_copy(update=fields)
            self._jobs[job_id] = job
            return job

    def append_log(self, job_id: int, text: str) -> None:
        with self._lock:
            self._logs[job_id] += text.encode()

    def add_metrics(self, job_id: int, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._metrics[job_id].extend(rows)

    def set_outputs(self, job_id: int, files: dict[str, bytes]) -> None:
        """Give a job an output tree made of these files."""
        with self._lock:
            self._outputs[job_id] = dict(files)
            for data in files.values():
                self.blobs[hashlib.sha256(data).hexdigest()] = data
            self._jobs[job_id] = self._jobs[job_id].model_copy(
                update={"output_tree": _tree(files).id})

    def add_tree(self, files: dict[str, bytes]) -> TreeInfo:
        """Store these files as a tree (as a sync would); returns it."""
        tree = _tree(files)
        with self._lock:
            for data in files.values():
                self.blobs[hashlib.sha256(data).hexdigest()] = data
            self.trees[tree.id] = tree
        return tree

    def add_registry_version(self, kind: str, name: str, files: dict[str, bytes], *,
                             tag: str | None = None, description: str = "",
                             used_by: list[int] | None = None, deleted: bool = False,
                             created_by: str | None = None, shared: bool = False,
                             group: str | None = None) -> RegistryVersion:
        """Add a version (and the dataset or model, when new) made of these files."""
        tree = self.add_tree(files)
        with self._lock:
            version = self._new_version(kind, name, tree.id, created_by or self.user,
                                        description, tag, {}, group=group, shared=shared)
            if used_by or deleted:
                version = version.model_copy(update={"used_by": list(used_by or []),
                                                     "deleted": deleted})
                self._put_version(kind, name, version)
            return version

    def set_gpu(self, index: int, **fields: Any) -> None:
        with self._lock:
            gpus = list(self.gpu_list.gpus)
            gpus[index] = gpus[index].model_copy(update=fields)
            self.gpu_list = self.gpu_list.model_copy(update={"gpus": gpus})

    # --- the API ----------------------------------------------------------------------

    def check_version(self) -> VersionInfo:
        return self._do("version", lambda: VersionInfo(
            api_version=API_VERSION, server_version="fake", mode="multi-user"))

    def version(self) -> VersionInfo:
        return self.check_version()

    def me(self) -> Me:
        return self._do("me", lambda: Me(user=self.user, uid=1000, admin=self.admin,
                                         groups=[], mode="multi-user"))

    def gpus(self) -> GpuList:
        return self._do("gpus", lambda: self.gpu_list)

    def jobs(self, *, scope: str = "all", state: str | None = None, user: str | None = None,
             limit: int = 100, offset: int = 0, before: int | None = None,
             since: float | None = None) -> JobList:
        def listing() -> JobList:
            who = self.user if scope == "mine" else user
            with self._lock:
                found = [j for j in sorted(self._jobs.values(), key=lambda j: -j.id)
                         if (who is None or j.user == who) and (state is None or j.state == state)
                         and (since is None or j.submitted_at >= since)]
            page = [j for j in found if before is None or j.id < before][offset:offset + limit]
            return JobList(jobs=page, total=len(found), offset=offset, limit=limit,
                           next_before=page[-1].id if len(page) == limit else None)
        return self._do("jobs", listing)

    def job(self, job_id: int) -> JobInfo:
        return self._do("job", self._job, job_id)

    def _job(self, job_id: int) -> JobInfo:
        with self._lock:
            if job_id not in self._jobs:
                raise NotFound(f"no job {job_id}")
            return self._jobs[job_id]

    def cancel(self, job_id: int) -> JobInfo:
        def cancel() -> JobInfo:
            job = self._job(job_id)
            if job.user != self.user and not self.admin:
                raise Forbidden(f"job {job_id} belongs to {job.user}; only they or an admin "
                                f"may cancel it")
            if job.state in TERMINAL_STATES:
                raise Conflict(f"job {job_id} already ended ({job.state})")
            return self.update_job(job_id, state="cancelled", ended_at=self.now,
                                   message=f"cancelled by {self.user}", reason=None)
        return self._do("cancel", cancel)

    def logs(self, job_id: int, offset: int = 0) -> bytes:
        return self._do("logs", lambda: (self._job(job_id), self._logs[job_id][offset:])[1])

    def follow_logs(self, job_id: int, offset: int = 0) -> Iterator[bytes]:
        yield self.logs(job_id, offset)

    def append_log_bytes(self, job_id: int, data: bytes) -> None:
        with self._lock:
            self._logs[job_id] += data

    def log_range(self, job_id: int, offset: int, length: int) -> tuple[bytes, int]:
        def read() -> tuple[bytes, int]:
            self._job(job_id)
            log = self._logs[job_id]
            return log[offset:offset + min(length, MAX_LOG_RANGE)], len(log)
        return self._do("log_range", read)

    def log_search(self, job_id: int, text: str, offset: int = 0, *, backward: bool = False,
                   limit: int = 100) -> LogMatches:
        def search() -> LogMatches:
            self._job(job_id)
            log, needle = self._logs[job_id].lower(), text.encode().lower()
            found, at = [], log.find(needle)
            while at >= 0:
                found.append(at)
                at = log.find(needle, at + 1)
            found = [i for i in reversed(found) if i < offset] if backward else \
                [i for i in found if i >= offset]
            return LogMatches(offsets=found[:limit], next=None, size=len(log))
        return self._do("log_search", search)

    def metrics(self, job_id: int, since: int = 0) -> MetricsPage:
        def page() -> MetricsPage:
            self._job(job_id)
            rows = self._metrics[job_id]
            return MetricsPage(metrics=rows[since:], next=len(rows))
        return self._do("metrics", page)

    def outputs(self, job_id: int) -> TreeInfo:
        def outputs() -> TreeInfo:
            job = self._job(job_id)
            if job_id not in self._outputs:
                raise NotFound(f"job {job_id} has no outputs yet ({job.state})")
            return _tree(self._outputs[job_id])
        return self._do("outputs", outputs)

    def submit(self, *, spec: dict[str, Any] | None = None, spec_yaml: str | None = None,
               source: str = "nai.yaml", overrides: dict[str, Any] | None = None,
               code_tree: str | None = None, code_from_model: bool = False,
               dry_run: bool = False) -> JobInfo:
        def submit() -> JobInfo:
            fields = dict(yaml.safe_load(spec_yaml) if spec_yaml else spec or {})
            fields.update(overrides or {})
            if dry_run:  # as the server: nothing is queued, the job would start now
                return JobInfo(id=0, name=fields.get("name", "job"), user=self.user,
                               group=None, state="queued", spec=fields, code_tree=code_tree,
                               submitted_at=self.now, est_start=self.now)
            self.submitted.append({"spec": fields, "code_tree": code_tree, "source": source})
            job = self.add_job(fields.get("name", "job"), wanted=int(fields.get("gpus", 1)),
                               spec=fields)
            return self.update_job(job.id, code_tree=code_tree)
        return self._do("submit", submit)

    def tree(self, tree_id: str) -> TreeInfo:
        def tree() -> TreeInfo:
            if tree_id not in self.trees:
                raise NotFound(f"no tree {tree_id[:12]}")
            return self.trees[tree_id]
        return self._do("tree", tree)

    # --- registries -------------------------------------------------------------------
    # Everyone reads everything here: the fake does not model sharing.

    def _new_version(self, kind: str, name: str, tree_id: str, by: str, description: str,
                     tag: str | None, metadata: dict[str, Any], *, group: str | None = None,
                     shared: bool = False) -> RegistryVersion:
        """Append a version (creating the entry when new); the caller holds the lock."""
        entry = self._registries.get((kind, name))
        if entry is None:
            entry = RegistryEntry(kind=kind, name=name,  # type: ignore[arg-type]
                                  owner={"group": group} if group else {"user": by},
                                  visibility="shared" if shared else "private",
                                  shared_with_groups=[], description=description,
                                  created_at=self.now, latest=None, versions=[],
                                  may_write=True)
        tree = self.trees.get(tree_id)
        number = max((v.version for v in entry.versions), default=0) + 1
        versions = [v.model_copy(update={"tag": None}) if tag and v.tag == tag else v
                    for v in entry.versions]
        version = RegistryVersion(version=number, tag=tag, tree_id=tree_id,
                                  size=tree.size if tree else 0,
                                  files=tree.files if tree else 0, created_at=self.now,
                                  created_by=by, description=description, metadata=metadata)
        self._registries[(kind, name)] = entry.model_copy(
            update={"versions": [*versions, version], "latest": number})
        return version

    def _put_version(self, kind: str, name: str, version: RegistryVersion) -> None:
        entry = self._registries[(kind, name)]
        versions = [version if v.version == version.version else v for v in entry.versions]
        live = [v.version for v in versions if not v.deleted]
        self._registries[(kind, name)] = entry.model_copy(
            update={"versions": versions, "latest": max(live, default=None)})

    def _entry(self, kind: str, name: str) -> RegistryEntry:
        if kind not in ("dataset", "model"):
            raise ValueError(f"kind: 'dataset' or 'model', not {kind!r}")
        with self._lock:
            entry = self._registries.get((kind, name))
        if entry is None:
            raise NotFound(f"no {kind} {name!r}: `nai {kind} list` shows those you may read")
        return entry

    def registry_list(self, kind: str) -> list[RegistrySummary]:
        def listing() -> list[RegistrySummary]:
            with self._lock:
                entries = sorted((e for (k, _), e in self._registries.items() if k == kind),
                                 key=lambda e: e.name)
            out = []
            for e in entries:
                latest = next((v for v in e.versions if v.version == e.latest), None)
                out.append(RegistrySummary(
                    kind=e.kind, name=e.name, owner=e.owner, visibility=e.visibility,
                    shared_with_groups=e.shared_with_groups, description=e.description,
                    created_at=e.created_at, latest=e.latest,
                    latest_tag=latest.tag if latest else None,
                    size=latest.size if latest else 0, files=latest.files if latest else 0,
                    versions=sum(not v.deleted for v in e.versions), may_write=e.may_write))
            return out
        return self._do("registry_list", listing)

    def registry_entry(self, kind: str, name: str) -> RegistryEntry:
        return self._do("registry_entry", self._entry, kind, name)

    def registry_create(self, kind: str, name: str, tree_id: str, *, group: str | None = None,
                        shared: bool = False, description: str = "", tag: str | None = None,
                        metadata: dict[str, Any] | None = None) -> RegistryEntry:
        def create() -> RegistryEntry:
            with self._lock:
                if (kind, name) in self._registries:
                    raise Conflict(f"{kind} {name!r} exists: push a new version instead")
                self._new_version(kind, name, tree_id, self.user, description, tag,
                                  metadata or {}, group=group, shared=shared)
            return self._entry(kind, name)
        return self._do("registry_create", create)

    def registry_push(self, kind: str, name: str, tree_id: str, *, description: str = "",
                      tag: str | None = None, metadata: dict[str, Any] | None = None,
                      allow_same: bool = False) -> PushedVersion:
        def push() -> PushedVersion:
            entry = self._entry(kind, name)
            live = [v for v in entry.versions if not v.deleted]
            if live and live[-1].tree_id == tree_id and not allow_same:  # as the server
                return PushedVersion(**live[-1].model_dump(), unchanged=True)
            with self._lock:
                made = self._new_version(kind, name, tree_id, self.user, description, tag,
                                         metadata or {})
            return PushedVersion(**made.model_dump())
        return self._do("registry_push", push)

    def registry_version(self, kind: str, name: str, ref: str = "latest") -> RegistryVersion:
        def version() -> RegistryVersion:
            entry = self._entry(kind, name)
            for v in entry.versions:
                if (ref == "latest" and v.version == entry.latest) or ref in (str(v.version),
                                                                              v.tag):
                    return v
            if ref == "latest":
                raise Invalid(f"{kind} {name} has no live version")
            raise NotFound(f"{kind} {name} has no version {ref!r}")
        return self._do("registry_version", version)

    # --- admin ------------------------------------------------------------------------

    def _admin_only(self) -> None:
        if not self.admin:
            raise Forbidden("only admins may do this")

    def put_user(self, name: str, *, admin: bool = False) -> UserInfo:
        """Register a user (setting the scene; no permission check)."""
        info = UserInfo(name=name, uid=1000 + len(self._users), admin=admin, groups=[],
                        quota=Quota(), created_at=self.now)
        self._users[name] = info
        return info

    def add_user(self, name: str) -> UserInfo:
        def add() -> UserInfo:
            self._admin_only()
            if name in self._users:
                raise Conflict(f"user {name!r} exists")
            return self.put_user(name)
        return self._do("add_user", add)

    def users(self) -> list[UserInfo]:
        def users() -> list[UserInfo]:
            self._admin_only()
            return list(self._users.values())
        return self._do("users", users)

    def remove_user(self, name: str) -> None:
        def remove() -> None:
            self._admin_only()
            if self._users.pop(name, None) is None:
                raise NotFound(f"no user {name!r}")
        self._do("remove_user", remove)

    def groups(self) -> list[GroupInfo]:
        return self._do("groups", lambda: list(self._groups.values()))

    def add_group(self, name: str) -> GroupInfo:
        def add() -> GroupInfo:
            self._admin_only()
            info = GroupInfo(name=name, members=[], quota=Quota(), created_at=self.now)
            self._groups[name] = info
            return info
        return self._do("add_group", add)

    def add_member(self, group: str, user: str) -> GroupInfo:
        def add() -> GroupInfo:
            self._admin_only()
            info = self._groups[group]
            info = info.model_copy(update={"members": [*info.members, user]})
            self._groups[group] = info
            if user in self._users:
                u = self._users[user]
                self._users[user] = u.model_copy(update={"groups": [*u.groups, group]})
            return info
        return self._do("add_member", add)

    def set_quota(self, kind: str, name: str, quota: Quota) -> Quota:
        def set_quota() -> Quota:
            self._admin_only()
            table: dict[str, Any] = self._users if kind == "users" else self._groups
            if name not in table:
                raise NotFound(f"no {kind[:-1]} {name!r}")
            table[name] = table[name].model_copy(update={"quota": quota})
            return quota
        return self._do("set_quota", set_quota)

    def drained(self) -> bool:
        return self._do("drained", lambda: self._drained)

    def drain(self, drained: bool) -> bool:
        def drain() -> bool:
            self._admin_only()
            self._drained = drained
            return drained
        return self._do("drain", drain)


def _gpu(index: int) -> GpuState:
    return GpuState(index=index, uuid=f"GPU-fake-{index}", name="Fake A100",
                    memory_total=80 * GIB, memory_used=0, memory_free=80 * GIB, utilization=0)


def _tree(files: dict[str, bytes]) -> TreeInfo:
    entries = [TreeEntryModel(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())
               for path, data in sorted(files.items())]
    tree_id = hashlib.sha256("".join(e.path + e.sha256 for e in entries).encode()).hexdigest()
    return TreeInfo(id=tree_id, entries=entries, files=len(entries),
                    size=sum(e.size for e in entries))
