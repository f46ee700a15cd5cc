"""`nai-admin store gc`: the pure rules, what a daemon's state names (read mostly
without its lock), and the phases over a real store on disk (what goes, what stays, a
gc cut between its phases, promises made to clients)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nai_server.core import store_gc as rules
from nai_server.core.trees import Entry
from nai_server.store.atomic import CommitLock
from nai_server.store.blobs import BlobStore, MissingBlobs
from nai_server.store.db import TinyDbStore
from nai_server.store.gc import GcRefused, Marks, StoreCollector, marks_in
from nai_server.store.verify import StoreVerifier

DAY = 86400


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file(path: str, data: bytes) -> Entry:
    return Entry(path=path, kind="file", size=len(data), mode=0o644, sha256=sha(data), target="")


def put(store: BlobStore, files: dict[str, bytes]) -> str:
    """Store the files' blobs and their tree; the tree's id."""
    for data in files.values():
        store.put_bytes(data)
    return store.put_tree([file(path, data) for path, data in files.items()])


def backdate(path: Path, days: float = 2) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


# --- the pure part ---------------------------------------------------------------------


def test_every_digest_anywhere_in_a_document_counts() -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    doc = {"jobs": {"1": {"code_tree": a, "dataset": {"tree_id": b}, "msg": "x" * 64}},
           c: [1, None, ("A" * 64, {"deep": [[a]]})]}
    assert set(rules.digests_in(doc)) == {a, b, c}


def test_the_cutoff_is_the_grace_and_never_after_the_oldest_running_job() -> None:
    now = 1_000 * rules.NS
    assert rules.cutoff_ns(now, 100, None) == 900 * rules.NS
    assert rules.cutoff_ns(now, 0, 500.0) == 500 * rules.NS - rules.START_SLACK_NS
    assert rules.cutoff_ns(now, 600, 950.0) == 400 * rules.NS  # the grace is earlier
    # Refreshed (atime after mtime): promised until REFRESH_EVERY_NS later, at most.
    assert rules.last_touched_ns(5, 9) == 9 + rules.REFRESH_EVERY_NS
    assert rules.last_touched_ns(9, 5) == 9 and rules.last_touched_ns(9, 9) == 9
    assert rules.cutoff_ns(now, 100, None, wall_now_ns=800 * rules.NS) == 700 * rules.NS
    hour = rules.REFRESH_EVERY_NS
    assert not rules.needs_refresh(5, 9, 9 + hour)  # refreshed lately: not again
    assert rules.needs_refresh(5, 9, 10 + hour) and rules.needs_refresh(9, 9, 10)
    assert rules.may_delete("x", set(), 1, 2)
    assert not rules.may_delete("x", {"x"}, 1, 2) and not rules.may_delete("y", set(), 2, 2)


# --- the mark: what a daemon's state names ---------------------------------------------

T = 1.7e9
CODE, OUT, HOT_CODE, LATE_OUT = (sha(name) for name in (b"code", b"out", b"hot", b"late"))
TICK_DEADLINE = 30.0  # seconds the daemon's tick may take to archive a job (ms, normally)


class SteppedLock(CommitLock):
    """The daemon's lock, which calls `released` each time its outermost holder lets go."""

    def __init__(self) -> None:
        super().__init__()
        self.released: Callable[[], None] = lambda: None

    def __exit__(self, *exc: object) -> None:
        outermost = self._local.depth == 1
        super().__exit__(*exc)
        if outermost:
            self.released()


def held_by_another(lock: CommitLock) -> bool:
    """Whether a thread other than a new one holds the lock, as a submit would find."""
    found: list[bool] = []

    def probe() -> None:
        got = lock.rlock.acquire(blocking=False)
        if got:
            lock.rlock.release()
        found.append(not got)

    prober = threading.Thread(target=probe)
    prober.start()
    prober.join()
    return found[0]


def daemon_state(tmp_path: Path, lock: CommitLock) -> tuple[TinyDbStore, int]:
    """A store with an archived job (CODE, OUT), a running one (HOT_CODE, started at
    T) and a finished one not archived yet (HOT_CODE, LATE_OUT): the latter's id."""
    store = TinyDbStore(tmp_path / "state", lock)
    done: dict[str, Any] = {"user": "ann", "state": "succeeded", "spec": {},
                            "submitted_at": T - 99, "started_at": T - 90, "ended_at": T - 9}
    with lock:
        old = store.insert_job({**done, "code_tree": CODE, "output_tree": OUT})
        store.insert_job({**done, "state": "running", "started_at": T, "ended_at": None,
                          "code_tree": HOT_CODE})
        late = store.insert_job({**done, "code_tree": HOT_CODE, "output_tree": LATE_OUT})
        store.archive_jobs([old], T)
    return store, late


def on_archive_read(store: TinyDbStore, before: Callable[[], None],
                    after: Callable[[], None]) -> None:
    """Call `before` and `after` around every read of the archived jobs, however marks
    asks for them (their trees, or every job's summary)."""
    trees, summaries = store.archived_trees, store.job_summaries

    def archived_trees() -> set[str]:
        before()
        found = trees()
        after()
        return found

    def job_summaries(*args: Any, **kwargs: Any) -> Iterator[Any]:
        before()
        found = list(summaries(*args, **kwargs))
        after()
        return iter(found)

    store.archived_trees = archived_trees  # type: ignore[method-assign]
    store.job_summaries = job_summaries  # type: ignore[method-assign]


def test_the_archived_jobs_are_read_with_the_daemons_lock_released(tmp_path: Path) -> None:
    """A million archived jobs must not stall every submit and tick while gc marks."""
    lock = CommitLock()
    store, _ = daemon_state(tmp_path, lock)
    held: list[bool] = []
    on_archive_read(store, lambda: held.append(held_by_another(lock)), lambda: None)

    found, oldest = marks_in(store, lock)()

    assert held == [False], "gc read the archived jobs holding the daemon's lock"
    assert {CODE, OUT, HOT_CODE, LATE_OUT} <= found and oldest == T


def test_a_job_archived_while_gc_marks_is_marked_and_the_tick_is_not_held_up(
        tmp_path: Path) -> None:
    """The daemon's tick archives a finished job in the one moment that could hide it:
    just after gc's first read of the daemon's state (hot or archived, whichever it
    reads first), before its second. Its trees must be marked all the same, and the
    tick must not wait for gc's reading of the archive."""
    lock = SteppedLock()
    store, late = daemon_state(tmp_path, lock)
    ticked: list[bool] = []

    def tick_once() -> None:
        if ticked:
            return
        ticked.append(False)

        def archive() -> None:
            with lock:
                store.archive_jobs([late], T)
            ticked[0] = True

        tick = threading.Thread(target=archive, name="tick")
        tick.start()
        tick.join(TICK_DEADLINE)

    lock.released = tick_once  # after a read under the lock
    on_archive_read(store, lambda: None, tick_once)  # after a read of the archive

    found, _ = marks_in(store, lock)()

    assert ticked == [True], "the tick could not archive: gc held the daemon's lock"
    assert store.get_hot_job(late) is None  # it did move meanwhile
    assert {CODE, OUT, HOT_CODE, LATE_OUT} <= found, "a job archived meanwhile was missed"


# --- the walk --------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def collector(store: BlobStore, marks: Marks = (set(), None)) -> StoreCollector:
    return StoreCollector(store, lambda: marks)


def verify_clean(store: BlobStore, trees: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
    jobs = [{"id": n, "user": "ann", "state": "succeeded", "code_tree": t}
            for n, t in enumerate(sorted(trees))]
    return bool(StoreVerifier(store, lambda: (jobs, []), rate=0).run(repair=False)["clean"])


def old_everything(store: BlobStore) -> None:
    for kind in ("sha256", "trees"):
        for path in (store.root / kind).rglob("*"):
            if path.is_file():
                backdate(path)


def test_gc_deletes_what_nothing_names_and_keeps_the_rest(store: BlobStore) -> None:
    kept = put(store, {"a": b"shared", "b": b"kept only"})
    gone = put(store, {"a": b"shared", "c": b"gone only" * 100})
    store.put_bytes(b"never in a tree")
    store.claims.record("ann", [sha(b"gone only" * 100), sha(b"kept only")])
    store.claims.record_tree("ann", gone)
    old_everything(store)
    young = store.put_bytes(b"uploaded a moment ago")  # its tree is not posted yet

    report = collector(store, ({kept}, None)).run(grace=DAY, dry_run=False)

    assert report["state"] == "done", report
    assert (report["trees_deleted"], report["trees_kept"], report["referenced_trees"]) == (
        1, 1, 1)
    assert (report["blobs_deleted"], report["blobs_kept"], report["young_blobs_kept"]) == (
        2, 3, 1)
    assert report["bytes_deleted"] == report["bytes_freed"] == 900 + len(b"never in a tree")
    assert report["claims_deleted"] == 2  # gone only's, and the tree's
    assert store.has_tree(kept) and not store.has_tree(gone)
    assert [store.has(sha(d)) for d in (b"shared", b"kept only", b"gone only" * 100)] == [
        True, True, False]
    assert store.has(young) and not store.has(sha(b"never in a tree"))
    assert store.claims.holds("ann", sha(b"kept only"))
    assert not store.claims.holds("ann", sha(b"gone only" * 100))
    assert not store.claims.has_tree("ann", gone)
    assert verify_clean(store, {kept})


def test_a_dry_run_deletes_nothing_and_counts_what_a_real_one_deletes(
        store: BlobStore) -> None:
    tree = put(store, {"a": b"a", "b": b"b"})
    store.claims.record("ann", [sha(b"a")])
    old_everything(store)
    before = sorted(p for p in store.root.rglob("*"))

    dry = collector(store).run(grace=DAY, dry_run=True)

    assert sorted(p for p in store.root.rglob("*")) == before
    assert (dry["trees_deleted"], dry["blobs_deleted"], dry["claims_deleted"]) == (1, 2, 1)
    real = collector(store).run(grace=DAY, dry_run=False)
    keys = ("trees_deleted", "blobs_deleted", "bytes_deleted", "claims_deleted")
    assert [dry[k] for k in keys] == [real[k] for k in keys]
    assert not store.has_tree(tree) and not store.has(sha(b"a"))


def test_a_gc_cut_between_trees_and_blobs_leaves_the_store_clean_and_the_next_finishes(
        store: BlobStore) -> None:
    kept = put(store, {"a": b"shared"})
    gone = put(store, {"a": b"shared", "b": b"orphan"})
    old_everything(store)
    first = collector(store, ({kept}, None))
    referenced, cutoff = first.mark(grace=0)
    assert first.sweep_trees(referenced, cutoff, dry_run=False) == {gone}
    # killed here: the tree is gone, its blob still stored, and nothing is broken
    assert store.has(sha(b"orphan")) and verify_clean(store, {kept})

    report = collector(store, ({kept}, None)).run(grace=0, dry_run=False)

    assert (report["trees_deleted"], report["blobs_deleted"]) == (0, 1)
    assert not store.has(sha(b"orphan")) and store.has(sha(b"shared"))
    assert verify_clean(store, {kept})


def test_a_blob_reported_present_to_a_client_stays_for_the_grace(store: BlobStore) -> None:
    digest = store.put_bytes(b"the client has it")
    other = store.put_bytes(b"nobody asked")
    store.claims.record("ann", [digest])
    old_everything(store)
    assert store.missing_for("ann", [digest]) == []  # "have it": the client will name it

    collector(store).run(grace=3600, dry_run=False)

    assert store.has(digest) and not store.has(other)
    tree = store.put_tree([file("f", b"the client has it")])  # the client's next step
    assert store.has_tree(tree)


def test_a_promise_writes_an_inode_at_most_once_an_hour_and_gc_allows_for_it(
        store: BlobStore) -> None:
    digest = store.put_bytes(b"asked for again and again")
    path = store.path_of(digest)
    old_everything(store)
    assert store.missing([digest]) == []
    refreshed = os.stat(path).st_atime_ns
    assert refreshed > os.stat(path).st_mtime_ns  # promised: its atime set
    earlier = refreshed - 1800 * rules.NS  # as if promised half an hour ago
    os.utime(path, ns=(earlier, os.stat(path).st_mtime_ns))
    assert store.missing([digest]) == []
    assert os.stat(path).st_atime_ns == earlier  # not written again within the hour
    # gc counts it as promised up to an hour after its atime: kept for the grace.
    collector(store).run(grace=60, dry_run=False)
    assert store.has(digest)
    assert not [p for p in (store.root / "tmp").iterdir()]  # nothing left aside


def test_a_tree_posted_after_gc_deleted_its_blob_is_refused(store: BlobStore) -> None:
    store.put_bytes(b"old")
    old_everything(store)
    collector(store).run(grace=0, dry_run=False)
    with pytest.raises(MissingBlobs):
        store.put_tree([file("f", b"old")])
    assert store.missing([sha(b"old")]) == [sha(b"old")]


def test_blobs_touched_since_the_oldest_running_job_started_stay(store: BlobStore) -> None:
    ahead = store.put_bytes(b"stored ahead by a running job")
    older = store.put_bytes(b"from before it started")
    backdate(store.path_of(ahead), days=3)
    backdate(store.path_of(older), days=5)
    started = time.time() - 4 * DAY

    collector(store, (set(), started)).run(grace=DAY, dry_run=False)

    assert store.has(ahead) and not store.has(older)


def test_symlinks_and_strays_are_left_alone_and_never_followed(
        store: BlobStore, tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.write_text("not the store's")
    digest = sha(b"x")
    fan = store.root / "sha256" / digest[:2]
    fan.mkdir(parents=True)
    (fan / digest[2:]).symlink_to(outside)
    (store.root / "sha256" / "README").write_text("an admin's note")
    linked_fan = store.root / "trees" / "zz"
    linked_fan.symlink_to(tmp_path)

    report = collector(store).run(grace=0, dry_run=False)

    assert report["state"] == "done" and report["blobs_deleted"] == 0
    assert outside.read_text() == "not the store's" and (fan / digest[2:]).is_symlink()
    assert sorted(report["stray"]) == sorted([
        "sha256/README", f"sha256/{digest[:2]}/{digest[2:]}", "trees/zz"])


def test_an_unreadable_tree_stops_gc_before_any_blob_goes(store: BlobStore) -> None:
    store.put_bytes(b"maybe needed")
    tree = store.put_tree([file("f", b"maybe needed")])
    path = store.root / "trees" / tree[:2] / f"{tree[2:]}.json"
    os.chmod(path, 0o644)
    path.write_text("{not json")

    with pytest.raises(GcRefused, match="verify --repair"):
        collector(store, ({tree}, None)).run(grace=0, dry_run=False)
    assert store.has(sha(b"maybe needed"))
