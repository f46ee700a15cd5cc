"""Typed job records over a store's job documents: the store boundary.

A store keeps jobs as JSON documents (`insert_job`, `update_job`, `get_job`,
`get_hot_job`, `hot_jobs`); `JobRecords` gives every such store the typed methods of
the `JobStore` port (nai_server.app.ports), converting with `Job.from_doc`/`to_doc`
in this one place. The TinyDB store and the in-memory one both inherit it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nai_server.core.job import Job, changes_doc

Doc = dict[str, Any]


class JobRecords:
    """The typed job methods, written once over the document methods below."""

    def insert_job(self, doc: Doc) -> int:
        raise NotImplementedError

    def update_job(self, job_id: int, fields: Doc) -> Doc:
        raise NotImplementedError

    def get_job(self, job_id: int) -> Doc | None:
        raise NotImplementedError

    def get_hot_job(self, job_id: int) -> Doc | None:
        raise NotImplementedError

    def hot_jobs(self) -> list[Doc]:
        raise NotImplementedError

    def commit(self) -> None:
        """Durable now (see JobStore.commit): nothing to do for a store in memory."""

    def watch_states(self, watcher: Callable[[str | None, Doc], None]) -> None:
        """Call `watcher(state before, document after)` whenever `update_job` changes a
        job's state (plugins' notifiers hear of job events this way)."""
        self.__dict__.setdefault("_state_watchers", []).append(watcher)

    def _state_changed(self, before: str | None, doc: Doc) -> None:
        for watcher in self.__dict__.get("_state_watchers", ()):
            watcher(before, doc)

    def insert(self, job: Job) -> Job:
        """Store a new job under the next id; the stored record (with its id)."""
        doc = job.to_doc()
        doc.pop("id", None)
        return Job.from_doc({**doc, "id": self.insert_job(doc)})

    def update(self, job_id: int, **changes: Any) -> Job:
        """Set these fields (named as in `Job`) of a hot job; the record after."""
        return Job.from_doc(self.update_job(job_id, changes_doc(**changes)))

    def get(self, job_id: int) -> Job | None:
        """The job, hot or archived."""
        doc = self.get_job(job_id)
        return None if doc is None else Job.from_doc(doc)

    def get_hot(self, job_id: int) -> Job | None:
        doc = self.get_hot_job(job_id)
        return None if doc is None else Job.from_doc(doc)

    def generation(self) -> object | None:
        """A token that changes with every write to the hot jobs (and every rollback):
        what was read before is still current while it is unchanged. None: the store
        cannot tell, so `hot` looks at every document each time."""
        return None

    def hot(self) -> list[Job]:
        """The jobs of the hot table (every active or queued one). This runs several
        times a tick over the whole queue: while the store's `generation` is unchanged
        the last list is still right and nothing is read; otherwise a job whose document
        has not changed keeps its record (records are immutable, and shared)."""
        token = self.generation()  # before reading: a write meanwhile makes it stale
        last: _HotCache | None = self.__dict__.get("_hot_cache")
        if last is not None and token is not None and last.token == token:
            return list(last.jobs)
        known = last.known if last is not None else {}
        jobs, docs = [], {}
        for doc in self.hot_jobs():
            seen = known.get(doc.get("id", 0))
            if seen is None or seen[0] != doc:
                seen = (doc, Job.from_doc(doc))
            docs[seen[1].id] = seen
            jobs.append(seen[1])
        self.__dict__["_hot_cache"] = _HotCache(token, tuple(jobs), docs)
        return jobs


class _HotCache:
    """What `hot` read last: under which generation, the records, and by job id the
    document each record was made of."""

    __slots__ = ("jobs", "known", "token")

    def __init__(self, token: object | None, jobs: tuple[Job, ...],
                 known: dict[int, tuple[Doc, Job]]) -> None:
        self.token, self.jobs, self.known = token, jobs, known
