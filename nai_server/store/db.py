"""The daemon's durable state in TinyDB: users, groups, settings, registries and jobs.

Only the daemon opens these files. The hot database (`state.json`, with its journal
`state.journal` of job changes since, see `journal`) holds users,
groups, settings and active or recently finished jobs; finished jobs move to one
archive file per month (see `archiving`), so the cost of a write, which
TinyDB pays in proportion to the file it rewrites, does not grow with history.

Every value is checked to serialise before it enters memory, and a write that cannot
be committed is rolled back (see `atomic`). Job ids never go backwards: the next id is
above every id in the hot file, in every archive, and every job directory on disk, so
a restored backup or a lost write can never hand out an id (and its directory) again.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.table import Document

from nai_server.store.archiving import ArchivedJobs
from nai_server.store.atomic import AtomicJSONStorage, CommitLock, check_storable
from nai_server.store.journal import JournaledStorage
from nai_server.store.registry_index import RegistryIndex

Doc = dict[str, Any]

# A job directory's name starts with its id ("12", or "12.something" once moved aside).
_JOB_DIR_ID = re.compile(r"\.?(\d{1,18})(?!\d)")


def _open(path: Path, storage: type[AtomicJSONStorage] = AtomicJSONStorage,
          **storage_options: Any) -> TinyDB:
    return TinyDB(path, storage=storage, **storage_options)


class TinyDbStore(ArchivedJobs):
    """Users, groups, settings, registries and the job table: the hot jobs here, the
    monthly archives in `ArchivedJobs`. Its typed job methods (`JobRecords`) make it
    an `app.ports.JobStore`."""

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
        self._reg_index: RegistryIndex | None = None  # see _registry_index
        archived = self._open_archives()  # refuses a damaged archive, before any write
        self._next_id: int = 1 + max(
            max((int(k) for k in self._hot()), default=0),
            int(self.get_setting("archived_max_id", 0)),
            *(high for _, high in self.get_setting("archive_ranges", {}).values()),
            *archived,
            _max_job_dir_id(state_dir / "jobs" if jobs_dir is None else jobs_dir),
        )

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

    def hot_jobs(self) -> list[Doc]:
        """Shallow copies of the hot jobs (this runs every tick)."""
        return [dict(d) for d in self._hot().values()]

    def get_hot_job(self, job_id: int) -> Doc | None:
        doc = self._hot().get(str(job_id))
        return dict(doc) if doc is not None else None

    # --- registries (datasets and models) -----------------------------------------------
    # One table per kind ("datasets", "models"), one document per entry holding its
    # versions. Writes go through TinyDB's Table; reads by name, by tree and by creator
    # go through an index of the in-memory tables (store/registry_index.py), so that the
    # questions asked per request do not cost time in proportion to the registry.

    def _registry(self, kind: str) -> Any:
        if kind not in ("dataset", "model"):
            raise ValueError(f"no registry of kind {kind!r}")
        return self.db.table(f"{kind}s", cache_size=0)

    def _registry_index(self) -> RegistryIndex:
        """The index of the registry tables as they are in memory now: built again when
        that memory was replaced (a rolled-back commit), else kept current by
        `put_registry_entry` and `remove_registry_entry`."""
        data = self.storage.read()
        assert data is not None
        index = self._reg_index
        if index is None or not index.current(data, self.storage.rollbacks):
            index = self._reg_index = RegistryIndex(data, self.storage.rollbacks)
        return index

    def _stored_entry(self, kind: str, name: str) -> Doc | None:
        """The stored document itself (not a copy): read it, never change it."""
        doc_id = self._registry_index().ids.get((kind, name))
        if doc_id is None:
            return None
        data = self.storage.read() or {}
        doc: Doc | None = data.get(f"{kind}s", {}).get(doc_id)
        return doc

    def get_registry_entry(self, kind: str, name: str) -> Doc | None:
        """A deep copy: TinyDB hands out documents that share nested lists with the
        storage's in-memory data, so editing one in place would skip the commit."""
        self._registry(kind)  # checks the kind
        doc = self._stored_entry(kind, name)
        return copy.deepcopy(doc) if doc is not None else None

    def list_registry_entries(self, kind: str) -> list[Doc]:
        """Deep copies of every entry, by name: costs time in proportion to the whole
        registry; per-request paths use the narrower reads below."""
        return sorted((copy.deepcopy(dict(d)) for d in self._registry(kind).all()),
                      key=lambda d: d["name"])

    def stored_registry_entries(self, kind: str) -> list[Mapping[str, Any]]:
        """The stored documents themselves, by name, without copies: for a caller that
        only reads them, under the lock, and keeps nothing of them after."""
        self._registry(kind)  # checks the kind
        table = (self.storage.read() or {}).get(f"{kind}s", {})
        return sorted(table.values(), key=lambda d: d["name"])

    def registry_holders(self, tree_id: str) -> list[Doc]:
        """Who may read each entry with a version (marked for deletion too) of tree
        `tree_id`: its kind, name, owner, visibility and shared_with_groups, copied.
        Costs time in proportion to those entries only."""
        index = self._registry_index()
        data = self.storage.read() or {}
        out = []
        for kind, name in sorted(index.holders.get(tree_id, ())):
            doc = data[f"{kind}s"][index.ids[(kind, name)]]
            out.append({"kind": kind, "name": name, "owner": dict(doc["owner"]),
                        "visibility": doc.get("visibility"),
                        "shared_with_groups": list(doc.get("shared_with_groups", ()))})
        return out

    def registry_entries_created_by(self, user: str) -> int:
        """How many datasets and models `user` created (their group's ones included)."""
        return self._registry_index().created.get(user, 0)

    def registry_has_marked(self) -> bool:
        """Whether some entry holds a version marked for deletion (one that goes once
        nothing needs it): when not, there is nothing to collect."""
        return bool(self._registry_index().marked)

    def registry_marked(self) -> list[tuple[str, str]]:
        """(kind, name) of every entry holding a version marked for deletion."""
        return sorted(self._registry_index().marked)

    def stored_registry_entries_pinning(self, keys: Iterable[tuple[str, str]]
                                        ) -> list[Mapping[str, Any]]:
        """The stored documents themselves (read them, never change them) of entries
        `keys` (kind, name) and of every entry whose lineage names one of their versions,
        in listing order: what deciding a removal from them, or collecting their marked
        versions, reads. Costs time in proportion to those entries only."""
        index = self._registry_index()
        data = self.storage.read() or {}
        return [data[f"{kind}s"][index.ids[(kind, name)]]
                for kind, name in index.with_pinners(keys)]

    def put_registry_entry(self, kind: str, doc: Doc) -> None:
        """Insert or replace the entry named `doc["name"]`."""
        check_storable(doc)
        table = self._registry(kind)
        index = self._registry_index()
        doc_id = index.ids.get((kind, doc["name"]))
        fresh = copy.deepcopy(doc)
        if doc_id is not None:

            def replace(stored: Doc) -> None:  # whole document, in one write
                stored.clear()
                stored.update(fresh)

            table.update(replace, doc_ids=[int(doc_id)])
        else:
            doc_id = str(table.insert(fresh))
        self._registry_index().add(kind, doc_id, fresh)

    def remove_registry_entry(self, kind: str, name: str) -> None:
        table = self._registry(kind)
        doc_id = self._registry_index().ids.get((kind, name))
        if doc_id is not None:
            table.remove(doc_ids=[int(doc_id)])
            self._registry_index().drop(kind, name)


def _max_job_dir_id(jobs_dir: Path) -> int:
    """The highest id among the job directories: names only, no stat per entry."""
    try:
        with os.scandir(jobs_dir) as entries:
            found = (_JOB_DIR_ID.match(e.name) for e in entries)
            return max((int(m.group(1)) for m in found if m), default=0)
    except FileNotFoundError:
        return 0
