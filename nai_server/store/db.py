"""The daemon's durable state in TinyDB: users, groups, settings and jobs.

Only the daemon opens these files. The hot database (`state.json`, with its journal
`state.journal` of job changes since, see `journal`) holds users,
groups, settings and active or recently finished jobs; finished jobs move to one
archive file per month (`archive/jobs-YYYY-MM.json`), so the cost of a write, which
TinyDB pays in proportion to the file it rewrites, does not grow with history.

Every value is checked to serialise before it enters memory, and a write that cannot
be committed is rolled back (see `atomic`). Job ids never go backwards: the next id is
above every id in the hot file, in every archive, and every job directory on disk, so
a restored backup or a lost write can never hand out an id (and its directory) again.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.table import Document

from nai_server.core.job import Job, JobSummary
from nai_server.store import archive_summary
from nai_server.store.atomic import (
    AtomicJSONStorage,
    CommitLock,
    check_storable,
    read_json_file,
)
from nai_server.store.history import (
    ArchiveIndex,
    JobFacts,
    JobFilter,
    doc_of,
    summary_of,
    tally,
)
from nai_server.store.job_records import JobRecords
from nai_server.store.journal import JournaledStorage

Doc = dict[str, Any]

# Archived jobs from which the loaded history is left out of garbage collections.
FREEZE_AFTER = 10_000
# A job directory's name starts with its id ("12", or "12.something" once moved aside).
_JOB_DIR_ID = re.compile(r"\.?(\d{1,18})(?!\d)")


def _open(path: Path, storage: type[AtomicJSONStorage] = AtomicJSONStorage,
          **storage_options: Any) -> TinyDB:
    return TinyDB(path, storage=storage, **storage_options)


class TinyDbStore(JobRecords):
    """Users, groups, settings and the job table (hot + monthly archives). Its typed
    job methods (`JobRecords`) make it an `app.ports.JobStore`."""

    def __init__(self, state_dir: Path, lock: CommitLock | None = None, *,
                 jobs_dir: Path | None = None) -> None:
        """With a `lock`, writes to the hot database are group-committed when the lock's
        outermost holder releases it; without one, each write is flushed at once.
        `jobs_dir` (default `state_dir/jobs`) holds the job directories, whose names
        are ids that must never be handed out again."""
        self.dir = state_dir
        self.archive_dir = state_dir / "archive"
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        self.db = _open(state_dir / "state.json", JournaledStorage,
                        group_commit=lock is not None, lock=lock.rlock if lock else None)
        storage = self.db.storage
        assert isinstance(storage, JournaledStorage)
        self.storage = storage
        if lock is not None:
            lock.storage = storage
        if storage.read() is None:  # a new state dir: give the tables a home
            storage.write({"jobs": {}})
            storage.commit()  # on disk now: the state a failed commit returns to
        self.users = self.db.table("users", cache_size=0)
        self.groups = self.db.table("groups", cache_size=0)
        self.meta = self.db.table("meta", cache_size=0)
        self.jobs = self.db.table("jobs", cache_size=0)
        self.history = ArchiveIndex(self.archive_dir)
        # Per month, how many archived jobs each (user, state) has: a listing's total
        # without reading the archives. Changed only under the service's lock.
        self._tallies: dict[str, dict[tuple[str, str], int]] = {}
        # What questions over every job need of each archived one, in memory.
        self.facts = JobFacts()
        # Refuse to start on a damaged archive too, before anything is written.
        with _gc_paused(freeze=lambda: len(self.facts) >= FREEZE_AFTER):
            archived = [self._scan_archive(p)
                        for p in sorted(self.archive_dir.glob("jobs-*.json"))]
        self._next_id: int = 1 + max(
            max((int(k) for k in self._hot()), default=0),
            int(self.get_setting("archived_max_id", 0)),
            *(high for _, high in self.get_setting("archive_ranges", {}).values()),
            *archived,
            _max_job_dir_id(state_dir / "jobs" if jobs_dir is None else jobs_dir),
        )

    def _scan_archive(self, path: Path) -> int:
        """The highest id in an archive file; counts its jobs for `archived_count`. From
        its summary when that was made of the file as it is; else parsed (a
        damaged file raises StateUnreadable naming it) and summarised anew."""
        month = path.name[len("jobs-"):-len(".json")]
        known = archive_summary.load(path)
        if known is not None:
            high, self._tallies[month], facts = known
            self.facts.add_facts(facts)
            return high
        data = read_json_file(path)  # raises StateUnreadable naming the file
        jobs = data.get("jobs") if isinstance(data, dict) else None
        if not isinstance(jobs, dict):
            return 0
        ids = [int(k) for k in jobs if k.isdigit()]
        self._tallies[month] = tally(d for d in jobs.values() if isinstance(d, dict))
        self.facts.add((int(k), d) for k, d in jobs.items() if k.isdigit() and isinstance(d, dict))
        high = max(ids, default=0)
        archive_summary.save(path, high, self._tallies[month], self.facts.of(ids))
        return high

    def close(self) -> None:
        self.db.close()

    @property
    def rollbacks(self) -> int:
        """How many commits of the hot database failed and were rolled back: a cache
        of what the store held must be dropped when this changes."""
        return self.storage.rollbacks

    def generation(self) -> tuple[int, int]:
        """Changes with every write to the hot database (archiving included, which
        records its id ranges there) and every rollback: what was read from the store
        before is still current while this is unchanged."""
        return self.storage.pending(), self.storage.rollbacks

    # --- settings ---------------------------------------------------------------------

    def _meta(self) -> Doc:
        doc = self.meta.get(doc_id=1)
        return dict(doc) if doc else {}

    def get_setting(self, key: str, default: Any = None) -> Any:
        return self._meta().get(key, default)

    def set_setting(self, key: str, value: Any) -> None:
        check_storable(value)
        self.meta.upsert(Document({key: value}, doc_id=1))

    # --- users and groups -------------------------------------------------------------

    def get_user(self, name: str) -> Doc | None:
        doc = self.users.get(Query().name == name)
        return dict(doc) if isinstance(doc, Document) else None

    def list_users(self) -> list[Doc]:
        return sorted((dict(d) for d in self.users.all()), key=lambda d: d["name"])

    def add_user(self, doc: Doc) -> None:
        check_storable(doc)
        self.users.insert(doc)

    def update_user(self, name: str, fields: Doc) -> None:
        check_storable(fields)
        self.users.update(fields, Query().name == name)

    def remove_user(self, name: str) -> None:
        """Remove the user and their group memberships."""
        self.users.remove(Query().name == name)
        for group in self.groups.search(Query().members.any([name])):
            members = [m for m in group["members"] if m != name]
            self.groups.update({"members": members}, doc_ids=[group.doc_id])

    def get_group(self, name: str) -> Doc | None:
        doc = self.groups.get(Query().name == name)
        return dict(doc) if isinstance(doc, Document) else None

    def list_groups(self) -> list[Doc]:
        return sorted((dict(d) for d in self.groups.all()), key=lambda d: d["name"])

    def add_group(self, doc: Doc) -> None:
        check_storable(doc)
        self.groups.insert(doc)

    def update_group(self, name: str, fields: Doc) -> None:
        check_storable(fields)
        self.groups.update(fields, Query().name == name)

    def remove_group(self, name: str) -> None:
        self.groups.remove(Query().name == name)

    # --- jobs -------------------------------------------------------------------------

    def next_job_id(self) -> int:
        """Ids never repeat, even after every hot job has been archived."""
        return self._next_id

    # The hot job table is read and written by key in TinyDB's own storage layout
    # ({"jobs": {"<id>": doc}}): TinyDB's Table rebuilds the whole table twice per
    # operation, which made each submit cost O(queue length) in Python.

    def _hot(self) -> dict[str, Doc]:
        data = self.db.storage.read()
        assert data is not None
        jobs: dict[str, Doc] = data.setdefault("jobs", {})
        return jobs

    def _write_hot(self, job_id: int | None = None) -> None:
        """Save the change to hot job `job_id` (a journal record), or, with None, to
        any of them (the whole file)."""
        if job_id is None:
            self.storage.write(self.storage.read() or {})
        else:
            self.storage.write_jobs({str(job_id)})
        self.jobs.clear_cache()

    def insert_job(self, doc: Doc) -> int:
        """Store a new job under the next id (one write) and return the id."""
        job_id = self._next_id
        stored = {**doc, "id": job_id}
        check_storable(stored)
        # Taken before the write: an id handed out is spent even if the commit fails.
        self._next_id = job_id + 1
        self._hot()[str(job_id)] = stored
        self._write_hot(job_id)
        return job_id

    def commit(self) -> None:
        """Write what is pending to disk now (normally the group commit does)."""
        self.storage.commit()

    def update_job(self, job_id: int, fields: Doc) -> Doc:
        check_storable(fields)
        hot = self._hot()
        before = hot[str(job_id)].get("state")
        doc = {**hot[str(job_id)], **fields}
        hot[str(job_id)] = doc
        self._write_hot(job_id)
        if "state" in fields:
            self._state_changed(before, dict(doc))
        return dict(doc)

    def get_job(self, job_id: int) -> Doc | None:
        doc = self._hot().get(str(job_id))
        if doc is not None:
            return dict(doc)
        return self.history.get(job_id, self.archived_months_of(job_id))

    def archived_months_of(self, job_id: int) -> list[str]:
        """The archive months whose id range holds `job_id`, newest first."""
        ranges: dict[str, list[int]] = self.get_setting("archive_ranges", {})
        return sorted((m for m, (low, high) in ranges.items() if low <= job_id <= high),
                      reverse=True)

    def hot_jobs(self) -> list[Doc]:
        """Shallow copies of the hot jobs (this runs every tick)."""
        return [dict(d) for d in self._hot().values()]

    def get_hot_job(self, job_id: int) -> Doc | None:
        doc = self._hot().get(str(job_id))
        return dict(doc) if doc is not None else None

    def archived_months(self, below: int | None = None) -> list[str]:
        """The archive months that may hold an id below `below`, newest first."""
        ranges: dict[str, list[int]] = self.get_setting("archive_ranges", {})
        return sorted((m for m, (low, _) in ranges.items() if below is None or low < below),
                      reverse=True)

    def archived_top(self, below: int | None = None) -> int:
        """The highest archived id below `below` could be (0: none)."""
        ranges: dict[str, list[int]] = self.get_setting("archive_ranges", {})
        return max((high if below is None else min(high, below - 1)
                    for low, high in ranges.values() if below is None or low < below),
                   default=0)

    def archived_count(self, user: str | None = None, state: str | None = None) -> int:
        """How many archived jobs have this user and state (None: any), from the
        per-month tallies: no archive is read."""
        return sum(n for counts in self._tallies.values() for (u, s), n in counts.items()
                   if (user is None or u == user) and (state is None or s == state))

    def iter_jobs(self, pred: Callable[[Doc], bool] | None = None) -> Iterator[Doc]:
        """Every job whole, newest id first: the hot table, then the archives (through
        the history cache, parsed as needed). For tools and tests: the daemon asks its
        questions over every job through `job_summaries`, which reads no archive."""
        hot = sorted(self.hot_jobs(), key=lambda d: -d["id"])
        seen = {d["id"] for d in hot}
        yield from (d for d in hot if pred is None or pred(d))
        for row in self.history.rows_matching(JobFilter(), self.archived_months()):
            if row[0] not in seen:
                doc = doc_of(row)
                if pred is None or pred(doc):
                    yield doc

    def job_summaries(self, hot: list[Job] | None = None, *,
                      ended_after: float | None = None) -> Iterator[JobSummary]:
        """Every job for a question over all of them (fair-share usage, who may read a
        tree, what a damaged tree breaks), newest archived id first after the hot ones:
        the hot jobs, then each archived job as `history.summary_of` keeps it, from
        memory. No archive is read, so a caller holding the service's lock
        holds it briefly, and one that passes `hot` (read under the lock just before)
        needs no lock for the rest. A job both hot and archived (a crash) comes once,
        hot. `ended_after`: archived jobs that ended before then are left out."""
        hot = sorted(self.hot() if hot is None else hot, key=lambda j: -j.id)
        seen = {j.id for j in hot}
        yield from (j.summary() for j in hot)
        low = float("-inf") if ended_after is None else ended_after
        yield from (summary_of(f) for f in self.facts.all()
                    if f[0] not in seen and (f[6] is None or f[6] >= low))

    def archived_using(self, tree_id: str) -> list[JobSummary]:
        """The archived jobs that use `tree_id` (code, outputs, dataset or model), as
        summaries (see `job_summaries`), from memory; no lock needed."""
        return [summary_of(f) for f in self.facts.using(tree_id)]

    def archive_jobs(self, job_ids: list[int], now: float | None = None) -> int:
        """Move finished jobs to their month's archive file (by end time).

        Order matters for crash safety: archive first, then the id high-water mark,
        then the removal from the hot table. A crash between leaves a job in both
        places; the hot copy wins and the next archive pass overwrites the old copy.
        """
        docs = [d for d in (self.jobs.get(doc_id=i) for i in job_ids) if isinstance(d, Document)]
        if not docs:
            return 0
        by_month: dict[str, list[Document]] = {}
        for doc in docs:
            ended = doc.get("ended_at") or doc.get("submitted_at") or now or time.time()
            by_month.setdefault(time.strftime("%Y-%m", time.gmtime(ended)), []).append(doc)
        ranges: dict[str, list[int]] = dict(self.get_setting("archive_ranges", {}))
        for month, month_docs in by_month.items():
            with self._archive(month) as db:
                counts, month_ids = self._bulk_upsert(db.table("jobs", cache_size=0),
                                                      month_docs)
            self._tallies[month] = counts
            self.facts.add((d.doc_id, d) for d in month_docs)
            archive_summary.save(self.archive_dir / f"jobs-{month}.json", max(month_ids),
                                 counts, self.facts.of(month_ids))
            ids = [d.doc_id for d in month_docs]
            low, high = ranges.get(month, [min(ids), max(ids)])
            ranges[month] = [min(low, *ids), max(high, *ids)]
        archived_max = max(int(self.get_setting("archived_max_id", 0)), *(d.doc_id for d in docs))
        self.meta.upsert(
            Document({"archive_ranges": ranges, "archived_max_id": archived_max}, doc_id=1)
        )
        self.jobs.remove(doc_ids=[d.doc_id for d in docs])
        self._next_id = max(self._next_id, archived_max + 1)
        return len(docs)

    @staticmethod
    def _bulk_upsert(table: Any, docs: list[Document]
                     ) -> tuple[dict[tuple[str, str], int], list[int]]:
        """One rewrite of the archive file for the whole batch; the month's tally and
        the ids it holds."""
        counts: dict[tuple[str, str], int] = {}
        ids: list[int] = []

        def update(raw: dict[int, Any]) -> None:
            for doc in docs:
                raw[doc.doc_id] = dict(doc)
            counts.update(tally(raw.values()))
            ids.extend(int(k) for k in raw)

        table._update_table(update)
        return counts, ids

    def _archive(self, month: str) -> TinyDB:
        # Opened per use, not cached, to write a batch into: reads go through `history`.
        return _open(self.archive_dir / f"jobs-{month}.json")

    # --- registries (datasets and models) -----------------------------------------------
    # One table per kind ("datasets", "models"), one document per entry holding its
    # versions. Entries are few and small, so TinyDB's Table is fast enough here.

    def _registry(self, kind: str) -> Any:
        if kind not in ("dataset", "model"):
            raise ValueError(f"no registry of kind {kind!r}")
        return self.db.table(f"{kind}s", cache_size=0)

    def get_registry_entry(self, kind: str, name: str) -> Doc | None:
        """A deep copy: TinyDB hands out documents that share nested lists with the
        storage's in-memory data, so editing one in place would skip the commit."""
        doc = self._registry(kind).get(Query().name == name)
        return copy.deepcopy(dict(doc)) if isinstance(doc, Document) else None

    def list_registry_entries(self, kind: str) -> list[Doc]:
        return sorted((copy.deepcopy(dict(d)) for d in self._registry(kind).all()),
                      key=lambda d: d["name"])

    def put_registry_entry(self, kind: str, doc: Doc) -> None:
        """Insert or replace the entry named `doc["name"]`."""
        check_storable(doc)
        table = self._registry(kind)
        existing = table.get(Query().name == doc["name"])
        if isinstance(existing, Document):
            fresh = copy.deepcopy(doc)

            def replace(stored: Doc) -> None:  # whole document, in one write
                stored.clear()
                stored.update(fresh)

            table.update(replace, doc_ids=[existing.doc_id])
        else:
            table.insert(copy.deepcopy(doc))

    def remove_registry_entry(self, kind: str, name: str) -> None:
        self._registry(kind).remove(Query().name == name)


@contextlib.contextmanager
def _gc_paused(freeze: Callable[[], bool]) -> Iterator[None]:
    """No garbage collection while a long history is loaded: every collection it set
    off scanned all the daemon's objects again, which doubled the store's open. A long
    history (long-lived, without cycles) is then left out of later collections, whose
    pauses would otherwise grow with it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze():
            gc.freeze()
        if was:
            gc.enable()


def _max_job_dir_id(jobs_dir: Path) -> int:
    """The highest id among the job directories: names only, no stat per entry."""
    try:
        with os.scandir(jobs_dir) as entries:
            found = (_JOB_DIR_ID.match(e.name) for e in entries)
            return max((int(m.group(1)) for m in found if m), default=0)
    except FileNotFoundError:
        return 0
