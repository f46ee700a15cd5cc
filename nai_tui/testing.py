"""Fakes of the terminal UI's ports, shipped with the code (like httpx's MockTransport):
an in-memory `FakeServerClient` and a `ManualClock` (`FakeTransfers` and the sample
`demo_server()` are in nai_tui.testing_demo).

    fake = demo_server(now=1_700_000_000.0)
    app = NaiApp(lambda entry: fake, clock=ManualClock(1_700_000_000.0),
                 transfers=FakeTransfers())
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from nai_server.protocol import (
    API_VERSION,
    MAX_LOG_RANGE,
    TERMINAL_STATES,
    Conflict,
    Forbidden,
    GpuList,
    GroupInfo,
    JobInfo,
    JobList,
    LogMatches,
    Me,
    MetricsPage,
    NotFound,
    Quota,
    TreeInfo,
    UserInfo,
    VersionInfo,
)
from nai_server.protocol.jobs import LogPiece

# Re-exported (`as`): tests import these from here with the fake.
from nai_tui.testing_base import GIB as GIB
from nai_tui.testing_base import _tree as _tree
from nai_tui.testing_registry import FakeRegistries


class ManualClock:
    """A clock that moves only when told: `clock()` is the time, `advance(s)` moves it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeServerClient(FakeRegistries):
    """An in-memory server: jobs, GPUs, logs, metrics, outputs, users, groups, trees,
    datasets and models.

    `fail` (a message) makes every call raise ConnectionFailed, as a dropped SSH link
    would; `error` makes every call raise that exception; `gate` (an Event) holds every
    call until it is set, as a slow link would. `max_in_flight` records the most calls
    that ever ran at once (polls must not overlap). The state, that plumbing and the
    scene-setting calls are in nai_tui.testing_base, the registries' calls in
    nai_tui.testing_registry.
    """

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

    def log_piece(self, job_id: int, offset: int, length: int) -> LogPiece:
        data, size = self.log_range(job_id, offset, length)
        with self._lock:
            spans = tuple((max(s, offset), min(e, offset + len(data)))
                          for s, e in self.stderr_spans.get(job_id, ())
                          if s < offset + len(data) and e > offset)
        return LogPiece(offset, data, size, spans)

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

    # --- admin ------------------------------------------------------------------------

    def _admin_only(self) -> None:
        if not self.admin:
            raise Forbidden("only admins may do this")

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
