"""`nai-admin store verify [--repair]`: walk the blob store, re-hash every blob, check
every tree, and say what is missing or corrupt and what it breaks (DESIGN §6).

It runs in a thread of its own, reading at most `rate` bytes per second, and takes the
service lock only to copy which jobs and registry versions name which trees (through
the `references` callable), never while hashing: the daemon answers meanwhile.

`--repair` moves corrupt blobs and tree files aside, into `<store>/corrupt/` (nothing
is ever deleted). The store then lacks them: "which digests do you lack" answers them
as missing, a client that pushes the same files sends them again, and that upload
restores them. What nobody can send again (outputs, files whose owner lost them) is
listed with the jobs and versions it breaks.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from nai_server.core import store_check as check
from nai_server.core.job import JobSummary
from nai_server.core.registry_rules import KINDS
from nai_server.core.trees import UNLIMITED, TreeError, is_digest, parse_manifest
from nai_server.store.atomic import CommitLock
from nai_server.store.background import BackgroundTask
from nai_server.store.blobs import CHUNK, BlobStore
from nai_server.store.db import TinyDbStore
from nai_server.store.touch import open_noatime

log = logging.getLogger("nai.verify")

Doc = dict[str, Any]
# What jobs and the registry name: (jobs as `core.store_check` reads them, [(kind,
# registry entry)]).
References = tuple[list[Doc], list[tuple[str, Doc]]]


class _Stopped(Exception):
    """The daemon is stopping: the walk ends where it is."""


def _new_report(repair: bool, now: float | None, state: str = "running") -> Doc:
    return {"state": state, "repair": repair, "started_at": now, "finished_at": None,
            "error": None, "blobs_checked": 0, "bytes_checked": 0, "trees_checked": 0,
            "blobs": [], "trees": [], "jobs": [], "versions": [], "stray": [],
            "unlisted": {}, "clean": False}


class StoreVerifier(BackgroundTask):
    """One verification at a time, in the background; `report()` tells how it goes."""

    def __init__(self, blobs: BlobStore, references: Callable[[], References], *,
                 rate: float, clock: Callable[[], float] = time.time,
                 pause: Callable[[float], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.blobs = blobs
        self.references = references
        self.rate = rate  # bytes per second; 0: as fast as the disk goes
        self.clock = clock
        self.monotonic = monotonic  # paces the reads (a test's pause moves it on)
        super().__init__(_new_report(False, None, state="never"))
        self._pause = pause or self._stop.wait

    # -- control -------------------------------------------------------------------------

    def start(self, repair: bool) -> Doc:
        """Begin a verification in the background; Conflict if one is running."""
        return self._begin(_new_report(repair, self.clock()), self._run, (repair,),
                           "nai-store-verify", "a store verification is running already; "
                           "follow it with `nai-admin store verify --status`")

    def _run(self, repair: bool) -> None:
        try:
            self.run(repair)
        except _Stopped:
            self._set(state="stopped", finished_at=self.clock())
        except Exception as exc:
            log.exception("store verification failed")
            self._set(state="failed", error=str(exc), finished_at=self.clock())

    def _add(self, key: str, item: Any) -> None:
        """List `item` (or what calling it gives) under `key`, or only count it once the
        list holds check.LISTED: a disk that lost a million blobs gets a report that
        still fits an answer."""
        with self._mutex:
            if len(self._report[key]) >= check.LISTED:
                self._report["unlisted"][key] = self._report["unlisted"].get(key, 0) + 1
                return
        value = item() if callable(item) else item
        with self._mutex:
            self._report[key].append(value)

    # -- the walk ------------------------------------------------------------------------

    def run(self, repair: bool) -> Doc:
        """Verify the whole store now, in this thread; return the report."""
        with self._mutex:
            if self._report["state"] != "running":
                self._report = _new_report(repair, self.clock())
        started = self.monotonic()
        corrupt = self._check_blobs(repair, started)
        broken, lost = self._check_trees(corrupt, repair)
        jobs, entries = self.references()
        for tree_id in sorted(check.referenced_trees(jobs, entries) - set(broken)):
            if is_digest(tree_id) and not self.blobs.has_tree(tree_id):
                broken[tree_id] = check.MISSING
                self._add("trees", {"id": tree_id, "problem": check.MISSING, "files": [],
                                    "damaged_files": 0, "moved_to": None})
        # A blob an upload restored meanwhile is no longer missing.
        for digest in sorted(d for d in lost if not self.blobs.has(d)):
            self._add("blobs", lambda d=digest: {
                "digest": d, "problem": check.MISSING, "moved_to": None,
                "owners": self.blobs.claims.holders(d)})
        with self._mutex:
            report = self._report
            report["jobs"] = check.broken_jobs(broken, jobs)
            report["versions"] = check.broken_versions(broken, entries)
            report["clean"] = check.is_clean(report)
            report.update(state="done", finished_at=self.clock())
            return copy.deepcopy(report)

    def _check_blobs(self, repair: bool, started: float) -> dict[str, str]:
        """Re-hash every blob; digest → CORRUPT for those that do not match their name."""
        corrupt: dict[str, str] = {}
        root = self.blobs.root / "sha256"
        done = 0
        for fan in sorted(os.scandir(root), key=lambda e: e.name):
            if not fan.is_dir(follow_symlinks=False) or len(fan.name) != 2:
                self._add("stray", f"sha256/{fan.name}")
                continue
            for item in sorted(os.scandir(fan.path), key=lambda e: e.name):
                if self._stop.is_set():
                    raise _Stopped
                digest = fan.name + item.name
                if not is_digest(digest) or not item.is_file(follow_symlinks=False):
                    self._add("stray", f"sha256/{fan.name}/{item.name}")
                    continue
                hashed = self._hash(item.path, started, done)
                if hashed is None:  # gone meanwhile: a tree that needs it says so
                    continue
                actual, size, inode = hashed
                done += size
                with self._mutex:
                    self._report["blobs_checked"] += 1
                    self._report["bytes_checked"] += size
                if actual == digest:
                    continue
                moved = self._move_aside(item.path, inode, f"{digest}.blob") if repair else None
                if repair and moved is None and self.blobs.has(digest):
                    continue  # an upload replaced it while it was read: whole again
                corrupt[digest] = check.CORRUPT
                self._add("blobs", lambda d=digest, moved=moved: {
                    "digest": d, "problem": check.CORRUPT, "moved_to": moved,
                    "owners": self.blobs.claims.holders(d)})
        return corrupt

    def _hash(self, path: str, started: float, done: int) -> tuple[str, int, int] | None:
        """(sha256, size, inode) of the file at `path`, read at the configured rate."""
        try:
            fd = open_noatime(path)
        except FileNotFoundError:
            return None
        hasher, size = hashlib.sha256(), 0
        with os.fdopen(fd, "rb") as f:
            inode = os.fstat(fd).st_ino
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
                size += len(chunk)
                if self._stop.is_set():
                    raise _Stopped
                delay = check.throttle_delay(done + size, self.monotonic() - started, self.rate)
                if delay > 0:
                    self._pause(delay)
        return hasher.hexdigest(), size, inode

    def _check_trees(self, corrupt: dict[str, str],
                     repair: bool) -> tuple[dict[str, str], set[str]]:
        """Check every tree file and the blobs its files need: (tree id → problem for
        each broken tree, the digests found missing)."""
        broken: dict[str, str] = {}
        lost: set[str] = set()
        root = self.blobs.root / "trees"
        for fan in sorted(os.scandir(root), key=lambda e: e.name):
            if not fan.is_dir(follow_symlinks=False):
                self._add("stray", f"trees/{fan.name}")
                continue
            for item in sorted(os.scandir(fan.path), key=lambda e: e.name):
                if self._stop.is_set():
                    raise _Stopped
                tree_id = fan.name + item.name.removesuffix(".json")
                if (not is_digest(tree_id) or not item.name.endswith(".json")
                        or not item.is_file(follow_symlinks=False)):
                    self._add("stray", f"trees/{fan.name}/{item.name}")
                    continue
                with self._mutex:
                    self._report["trees_checked"] += 1
                problem = self._check_tree(tree_id, item.path, corrupt, lost, repair)
                if problem is not None:
                    broken[tree_id] = problem
        return broken, lost

    def _check_tree(self, tree_id: str, path: str, corrupt: dict[str, str], lost: set[str],
                    repair: bool) -> str | None:
        try:
            with os.fdopen(open_noatime(path), "rb") as f:
                data = f.read()
                inode = os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            return None
        try:
            if hashlib.sha256(data).hexdigest() != tree_id:
                raise ValueError("does not match its id")
            entries = parse_manifest(json.loads(data), UNLIMITED)
        except (ValueError, TreeError):
            moved = self._move_aside(path, inode, f"{tree_id}.tree") if repair else None
            self._add("trees", {"id": tree_id, "problem": check.CORRUPT, "files": [],
                                "damaged_files": 0, "moved_to": moved})
            return check.CORRUPT
        damaged = check.damaged_files(entries, corrupt, self.blobs.has)
        if not damaged:
            return None
        lost.update(digest for _, digest, problem in damaged if problem == check.MISSING)
        self._add("trees", {"id": tree_id, "problem": check.INCOMPLETE,
                            "files": [p for p, _, _ in damaged[:check.SHOWN_PATHS]],
                            "damaged_files": len(damaged), "moved_to": None})
        return check.INCOMPLETE

    def _move_aside(self, path: str, inode: int, name: str) -> str | None:
        """Move the file at `path` into `<store>/corrupt/` if it is still the file that
        was read (inode `inode`); the new path relative to the store, or None."""
        aside = self.blobs.root / "corrupt"
        aside.mkdir(mode=0o700, exist_ok=True)
        target = aside / f"{name}.{int(self.clock())}"
        for n in range(1, 1000):
            if not target.exists():
                break
            target = aside / f"{name}.{int(self.clock())}.{n}"
        try:
            if os.stat(path).st_ino != inode:
                return None  # replaced (by an upload of the right bytes) since it was read
            os.rename(path, target)
        except FileNotFoundError:
            return None
        if os.stat(target).st_ino != inode:  # replaced in between: put the new one back
            with contextlib.suppress(FileExistsError):
                os.link(target, path)
            return None
        return str(target.relative_to(self.blobs.root))


def references_in(store: TinyDbStore, lock: CommitLock) -> Callable[[], References]:
    """`references` for a daemon: what its jobs and registry name. The hot jobs and the
    registry are copied under its lock; the archived jobs come from the store's
    summaries in memory, without it (no archive, and no blob, is read meanwhile)."""

    def read() -> References:
        with lock:
            hot = store.hot()
            entries: list[tuple[str, Doc]] = [
                (kind, doc) for kind in KINDS for doc in store.list_registry_entries(kind)]
        jobs = [_reference(job) for job in store.job_summaries(hot) if job.trees()]
        return jobs, entries

    return read


def _reference(job: JobSummary) -> Doc:
    """A job as `core.store_check` reads it: who ran it, in what state, and the trees it
    uses under their job keys."""
    doc: Doc = {"id": job.id, "user": job.user, "state": job.state.value,
                "code_tree": job.code_tree, "output_tree": job.output_tree}
    for role, tree in (("dataset", job.dataset_tree), ("model", job.model_tree)):
        doc[role] = {"tree_id": tree} if tree else None
    return doc
