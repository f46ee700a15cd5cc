"""An in-memory job store, for tests of the use cases and the run loop where the
TinyDB files are not the point (like huey's `MemoryStorage` beside its Redis one).

It keeps what the daemon's store promises of jobs (see `app.ports.JobStore`): ids
that never repeat, documents copied in and out so no caller edits the stored one,
values that must serialise, and archived jobs still found by id. It also keeps the
settings the fair-share book saves, and has no users or groups (so no quotas)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from nai_server.core.job import Job, JobSummary
from nai_server.store.atomic import check_storable
from nai_server.store.job_records import JobRecords

Doc = dict[str, Any]


class MemoryJobStore(JobRecords):
    """Jobs (hot and archived) and settings in dictionaries."""

    def __init__(self) -> None:
        self._hot: dict[int, Doc] = {}
        self._archived: dict[int, Doc] = {}
        self._settings: Doc = {}
        self._next_id = 1

    # --- jobs, as documents (the typed methods come from JobRecords) -----------------

    def next_job_id(self) -> int:
        return self._next_id

    def insert_job(self, doc: Doc) -> int:
        job_id = self._next_id
        stored = copy.deepcopy({**doc, "id": job_id})
        check_storable(stored)
        self._next_id = job_id + 1
        self._hot[job_id] = stored
        return job_id

    def update_job(self, job_id: int, fields: Doc) -> Doc:
        check_storable(fields)
        before = self._hot[job_id].get("state")
        doc = {**self._hot[job_id], **copy.deepcopy(fields)}
        self._hot[job_id] = doc
        if "state" in fields:
            self._state_changed(before, copy.deepcopy(doc))
        return copy.deepcopy(doc)

    def get_job(self, job_id: int) -> Doc | None:
        doc = self._hot.get(job_id, self._archived.get(job_id))
        return None if doc is None else copy.deepcopy(doc)

    def get_hot_job(self, job_id: int) -> Doc | None:
        doc = self._hot.get(job_id)
        return None if doc is None else copy.deepcopy(doc)

    def hot_jobs(self) -> list[Doc]:
        return [copy.deepcopy(d) for d in self._hot.values()]

    def iter_jobs(self, pred: Callable[[Doc], bool] | None = None) -> Iterator[Doc]:
        """Every job, newest id first."""
        every = {**self._archived, **self._hot}
        for job_id in sorted(every, reverse=True):
            if pred is None or pred(every[job_id]):
                yield copy.deepcopy(every[job_id])

    def job_summaries(self, hot: list[Job] | None = None, *,
                      ended_after: float | None = None) -> Iterator[JobSummary]:
        """As the TinyDB store's: the hot jobs, then the archived ones that ended at
        or after `ended_after`, newest id first."""
        hot = sorted(self.hot() if hot is None else hot, key=lambda j: -j.id)
        seen = {j.id for j in hot}
        yield from (j.summary() for j in hot)
        low = float("-inf") if ended_after is None else ended_after
        for job_id in sorted(self._archived, reverse=True):
            doc = self._archived[job_id]
            if job_id not in seen and (doc.get("ended_at") is None or doc["ended_at"] >= low):
                yield Job.from_doc(doc).summary()

    def archive_jobs(self, job_ids: list[int], now: float | None = None) -> int:
        moved = [i for i in job_ids if i in self._hot]
        for job_id in moved:
            self._archived[job_id] = self._hot.pop(job_id)
        return len(moved)

    # --- what the fair-share book reads and saves --------------------------------------

    def get_setting(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(self._settings.get(key, default))

    def set_setting(self, key: str, value: Any) -> None:
        check_storable(value)
        self._settings[key] = copy.deepcopy(value)

    def list_users(self) -> list[Doc]:
        return []

    def list_groups(self) -> list[Doc]:
        return []


