"""`nai-admin store gc [--grace 24h] [--dry-run]`: delete the trees and blobs nothing
refers to any more (removed dataset and model versions, uploads never used), so that
a shared server's disk does not only fill.

Mark: every tree id the daemon's state names — any sha256 digest anywhere in the hot
database (jobs, registry versions marked for deletion included, services, annotate
sessions, settings: `core.store_gc.digests_in`, so a field added later counts without
being listed here), read under the service lock, and then, with the lock released, the
code, output, dataset and model trees of every archived job (what the store keeps in
memory of the archives): a million archived jobs never hold up a submit or a tick.
Why no job slips between the two reads: see `marks_in`.

Sweep, in this order, so that a gc killed at any point leaves a store that `nai-admin
store verify` finds clean and the next gc finishes the work:
  1. trees neither marked nor touched since the cutoff;
  2. blobs that no tree left on disk names and not touched since the cutoff (which
     tree names which blob is read after step 1, from the trees themselves);
  3. claims (claims.py) of blobs and trees no longer stored.

The cutoff is `grace` before now, by the file system's clock, and never after the
oldest running job started (less a minute): outputs stored ahead of a running job's
end, and blobs its end's collection finds stored, are touched after it started, so
they stay however long it runs.

Race with clients: a client asks which blobs are missing, is told "have it", and
posts a tree naming it later; an upload, an output collection, or a HEAD of a tree
promises the same. Every such promise sets the file's atime to now while holding the
store's `sweep_lock` (blobs.py) — unless it did so within the last hour, which gc
allows for (`core.store_gc.last_touched_ns`): a push of a million files writes a
million inodes at most once an hour — and gc checks a file's age and moves it aside
(a rename into tmp/, unlinked once the lock is released: freeing a large file's
extents is slow) holding that same lock, a batch at a time, so uploads wait at most
one batch. So a promise
made before gc's check makes the file young and kept for `grace` from then; one made
after the delete finds the file missing and says so (the client sends it again,
`put_tree` refuses a tree that names it). The lock is held a batch of files at a time
on both sides, so neither a large tree nor a large gc holds up the other for long.
Any gap between a promise and what it promised for (the client's tree, the version
naming that tree) shorter than the grace is covered; a grace shorter than such gaps
(seconds, normally) is for tests and a quiet server only.

Alternatives not taken: holding gc's lock across each client's whole upload (it spans
several requests, and a client may vanish mid-way), or recording leases in the
database (a write per upload, and the database is not the store's to keep in step).

Never through a symlink: the store's folders are listed with `scandir`, every entry
is checked to be a regular file named as a digest (stray files are left alone and
listed), and `lstat`-ed again under the lock before it is moved aside.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from typing import Any

from nai_server.core import store_gc as rules
from nai_server.core.trees import UNLIMITED, is_digest, parse_manifest
from nai_server.store.atomic import CommitLock
from nai_server.store.background import BackgroundTask
from nai_server.store.blobs import BlobStore
from nai_server.store.db import TinyDbStore
from nai_server.store.touch import open_noatime

log = logging.getLogger("nai.gc")

Doc = dict[str, Any]
# What the daemon names: (tree ids, when the oldest running job started or None).
Marks = tuple[set[str], float | None]
BATCH = 256  # files checked and deleted per hold of the sweep lock
LISTED = 1000  # stray files listed; beyond, only counted


class _Stopped(Exception):
    """The daemon is stopping: gc ends where it is (the next one finishes)."""


class GcRefused(Exception):
    """The store holds something gc cannot read safely; nothing more is deleted."""


def _new_report(grace: float, dry_run: bool, now: float | None,
                state: str = "running") -> Doc:
    return {"state": state, "dry_run": dry_run, "grace_seconds": grace, "started_at": now,
            "finished_at": None, "error": None, "phase": None, "cutoff": None,
            "referenced_trees": 0, "trees_deleted": 0, "trees_kept": 0,
            "blobs_deleted": 0, "bytes_deleted": 0, "bytes_freed": 0,
            "blobs_kept": 0, "bytes_kept": 0, "young_trees_kept": 0, "young_blobs_kept": 0,
            "claims_deleted": 0, "stray": [], "unlisted_stray": 0}


class StoreCollector(BackgroundTask):
    """One gc at a time, in the background; `report()` tells how it goes."""

    def __init__(self, blobs: BlobStore, marks: Callable[[], Marks], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.blobs = blobs
        self.marks = marks
        self.clock = clock
        super().__init__(_new_report(0, False, None, state="never"))

    # -- control -------------------------------------------------------------------------

    def start(self, grace: float, dry_run: bool) -> Doc:
        """Begin a gc in the background; Conflict if one runs."""
        return self._begin(_new_report(grace, dry_run, self.clock()), self._run,
                           (grace, dry_run), "nai-store-gc", "a store gc is running "
                           "already; follow it with `nai-admin store gc --status`")

    def _run(self, grace: float, dry_run: bool) -> None:
        try:
            self.run(grace, dry_run)
        except Exception as exc:
            if not isinstance(exc, GcRefused):
                log.exception("store gc failed")
            self._set(state="failed", error=str(exc), finished_at=self.clock())

    def _add(self, **counts: int) -> None:
        with self._mutex:
            for key, n in counts.items():
                self._report[key] += n

    def _stray(self, path: str) -> None:
        with self._mutex:
            if len(self._report["stray"]) < LISTED:
                self._report["stray"].append(path)
            else:
                self._report["unlisted_stray"] += 1

    # -- the phases ----------------------------------------------------------------------

    def run(self, grace: float, dry_run: bool) -> Doc:
        """Collect now, in this thread; return the report."""
        with self._mutex:
            if self._report["state"] != "running":
                self._report = _new_report(grace, dry_run, self.clock())
        try:
            referenced, cutoff = self.mark(grace)
            trees = self.sweep_trees(referenced, cutoff, dry_run)
            blobs = self.sweep_blobs(cutoff, dry_run, trees)
            self.sweep_claims(dry_run, trees, blobs)
        except _Stopped:
            self._set(state="stopped", finished_at=self.clock())
        else:
            self._set(state="done", phase=None, finished_at=self.clock())
        return self.report()

    def mark(self, grace: float) -> tuple[set[str], int]:
        """The tree ids the daemon names, and the time (ns, by the file system's clock)
        before which a file unreferenced must have been last touched to go."""
        self._set(phase="mark")
        referenced, oldest = self.marks()
        cutoff = rules.cutoff_ns(self._fs_now_ns(), grace, oldest, time.time_ns())
        self._set(cutoff=cutoff / rules.NS)
        return referenced, cutoff

    def _fs_now_ns(self) -> int:
        """Now as the file system stamps files (its clock is coarser than time.time),
        read off the temp folder's own times: no new file, so a store out of inodes,
        when gc is needed most, can still be collected."""
        tmp = self.blobs.root / "tmp"
        os.utime(tmp)
        return os.stat(tmp).st_mtime_ns

    def sweep_trees(self, referenced: set[str], cutoff: int, dry_run: bool) -> set[str]:
        """Delete (dry: count) the trees neither `referenced` nor touched since
        `cutoff`; the ids of those deleted (dry: that would be)."""
        self._set(phase="trees")
        doomed: set[str] = set()
        for batch in _batches(self._listing("trees", ".json")):
            aside: list[str] = []
            with self.blobs.sweep_lock:
                for tree_id, path in batch:
                    verdict = _verdict(path, tree_id, referenced, cutoff)
                    if verdict is None:
                        continue  # gone meanwhile, or not a file: left alone
                    if verdict != GO:
                        self._add(trees_kept=1, young_trees_kept=int(verdict == YOUNG),
                                  referenced_trees=int(verdict == REFERENCED))
                        continue
                    if not dry_run:
                        aside.append(self._aside(path))
                        self.blobs.forget_tree(tree_id)
                    doomed.add(tree_id)
                    self._add(trees_deleted=1)
            _unlink_all(aside)
        return doomed

    def named_blobs(self, doomed: set[str]) -> set[str]:
        """The blobs every tree on disk names, but those in `doomed` (gone or, dry,
        going). GcRefused naming a tree that cannot be read: its blobs are unknown."""
        named: set[str] = set()
        for tree_id, path in self._listing("trees", ".json", strays=False):
            if tree_id in doomed:
                continue
            try:
                with os.fdopen(open_noatime(path), "rb") as f:
                    entries = parse_manifest(json.loads(f.read()), UNLIMITED)
                named.update(e.sha256 for e in entries if e.kind == "file")
            except FileNotFoundError:
                continue
            except (ValueError, OSError) as exc:  # a TreeError is a ValueError
                raise GcRefused(
                    f"tree {tree_id} cannot be read ({exc}), so which blobs it needs is "
                    "unknown: no blob was deleted. `nai-admin store verify --repair` moves "
                    "a corrupt tree aside; then run gc again") from exc
        return named

    def sweep_blobs(self, cutoff: int, dry_run: bool, doomed: set[str]) -> set[str]:
        """Delete (dry: count) the blobs that no tree but those `doomed` names, not
        touched since `cutoff` (a tree recorded meanwhile touched its blobs); the
        digests of those deleted (dry: that would be)."""
        self._set(phase="blobs")
        named = self.named_blobs(doomed)
        gone: set[str] = set()
        for batch in _batches(self._listing("sha256", "")):
            aside: list[str] = []
            with self.blobs.sweep_lock:
                for digest, path in batch:
                    try:
                        st = os.lstat(path)
                    except FileNotFoundError:
                        continue
                    verdict = _verdict(path, digest, named, cutoff, st)
                    if verdict is None:
                        continue
                    if verdict != GO:
                        self._add(blobs_kept=1, bytes_kept=st.st_size,
                                  young_blobs_kept=int(verdict == YOUNG))
                        continue
                    if not dry_run:
                        aside.append(self._aside(path))
                    gone.add(digest)
                    # Still linked into a job's folder: its bytes go with that folder.
                    freed = st.st_size if st.st_nlink == 1 else 0
                    self._add(blobs_deleted=1, bytes_deleted=st.st_size, bytes_freed=freed)
            _unlink_all(aside)
        return gone

    def _aside(self, path: str) -> str:
        """Move a doomed file into the temp folder, under the sweep lock: a rename is
        quick, where freeing a large file's extents (or an unlink on a network file
        system) would hold up every upload and, through them, the daemon's lock. The
        unlink follows outside the lock; a crash between leaves it to `clean_tmp`."""
        target = f"{self.blobs.root}/tmp/gc.{os.path.basename(path)}.{secrets.token_hex(4)}"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return ""
        return target

    def sweep_claims(self, dry_run: bool, trees: set[str], blobs: set[str]) -> None:
        """Delete the claims (claims.py) of blobs and trees the store no longer holds;
        dry: count those, and those of `trees` and `blobs`, which would go."""
        self._set(phase="claims")
        with os.scandir(self.blobs.claims.root) as users:
            user_dirs = sorted(u.path for u in users if u.is_dir(follow_symlinks=False))
        for user in user_dirs:
            for kind, suffix, doomed in (("sha256", "", blobs), ("trees", ".json", trees)):
                for digest, claim in _digest_files(f"{user}/{kind}", lambda _: None):
                    if self._stop.is_set():
                        raise _Stopped
                    target = f"{self.blobs.root}/{kind}/{digest[:2]}/{digest[2:]}{suffix}"
                    if dry_run and digest in doomed:
                        self._add(claims_deleted=1)
                        continue
                    # Under the lock: a blob uploaded again meanwhile is stored before
                    # its claim is recorded, so its claim is never taken after the check.
                    with self.blobs.sweep_lock:
                        if os.path.lexists(target):
                            continue
                        if not dry_run:
                            _unlink(claim)
                    self._add(claims_deleted=1)

    def _listing(self, kind: str, suffix: str, *,
                 strays: bool = True) -> Iterator[tuple[str, str]]:
        """The store's `kind` files; _Stopped as soon as the daemon stops (never a
        listing cut short: which blobs the trees name must be whole)."""
        note = self._stray_at(kind) if strays else (lambda _: None)
        for item in _digest_files(f"{self.blobs.root}/{kind}", note, suffix):
            if self._stop.is_set():
                raise _Stopped
            yield item

    def _stray_at(self, kind: str) -> Callable[[str], None]:
        return lambda rel: self._stray(f"{kind}/{rel}")


def _digest_files(root: str, stray: Callable[[str], None],
                  suffix: str = "") -> Iterator[tuple[str, str]]:
    """(digest, path) of every regular file `root/ab/cdef…{suffix}`; anything else
    (a symlink, a folder, another name) is reported to `stray` and left alone."""
    try:
        fans = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for fan in fans:
        if not fan.is_dir(follow_symlinks=False) or len(fan.name) != 2:
            stray(fan.name)
            continue
        with os.scandir(fan.path) as items:
            names = sorted((e.name, e.path, e.is_file(follow_symlinks=False))
                           for e in items)
        for name, path, is_file in names:
            stem = name[:-len(suffix)] if suffix and name.endswith(suffix) else None
            digest = fan.name + (name if not suffix else stem or "")
            if not is_file or not is_digest(digest):
                stray(f"{fan.name}/{name}")
                continue
            yield digest, path


GO, YOUNG, REFERENCED = "go", "young", "referenced"


def _verdict(path: str, name: str, kept: set[str], cutoff: int,
             st: os.stat_result | None = None) -> str | None:
    """GO if the file at `path` may be deleted, REFERENCED or YOUNG if not, None if it
    is gone or not a regular file. Call with the sweep lock, which every refresh takes."""
    if st is None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
    if not stat.S_ISREG(st.st_mode):
        return None
    if name in kept:
        return REFERENCED
    touched = rules.last_touched_ns(st.st_mtime_ns, st.st_atime_ns)
    return GO if rules.may_delete(name, kept, touched, cutoff) else YOUNG


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        if path:
            _unlink(path)


def _batches(items: Iterator[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    batch: list[tuple[str, str]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def marks_in(store: TinyDbStore, lock: CommitLock) -> Callable[[], Marks]:
    """`marks` for a daemon: every digest its hot database holds and when its oldest
    unfinished job started, read under its lock, then the trees of every archived job,
    read after the lock is released (`archived_trees`: from memory, under the store's
    own small lock), so a gc's time under the daemon's lock does not grow with history.

    No job is missed between the two reads, because the hot part is read first and the
    archive after. A job moves out of the hot table only in `archive_jobs`, in one hold
    of this lock: its archive file is written and its trees added to what
    `archived_trees` answers before it is removed from the hot table. So when the hot
    part is read, each job is either still hot (its trees read then) or its trees are
    already in the archive's answer; and that answer never loses a job's trees
    afterwards: archives are only added to (no archived job is removed or comes back to
    the hot table), and a job's trees are replaced only when the same job is archived
    again — after a crash left it in both places, so its hot copy, the one that counts,
    was read under the lock. A commit that fails after archiving rolls the hot table
    back: the job is then in both places, read twice. A job archived after the archive
    read was hot at the hot read, and one archived in between is in the archive read."""

    def read() -> Marks:
        with lock:  # the hot part only: bounded by the queue, not by the history
            found = set(rules.digests_in(store.storage.read() or {}))
            hot = store.hot()
        oldest = min((job.started_at for job in hot
                      if not job.terminal and job.started_at is not None), default=None)
        found |= store.archived_trees()  # after the hot read, never before: see above
        return found, oldest

    return read
