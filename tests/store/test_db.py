"""The TinyDB store: atomic files, refusal of unreadable state, the job archive."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

import pytest

from nai_server.store import atomic, db
from nai_server.store.atomic import (
    AtomicJSONStorage,
    CommitFailed,
    CommitLock,
    StateUnreadable,
    Unstorable,
)
from nai_server.store.db import TinyDbStore
from nai_server.store.history import JobFilter
from nai_server.testing import wait_for


def test_atomic_storage_replaces_whole_file(tmp_path: Path) -> None:
    storage = AtomicJSONStorage(tmp_path / "s.json")
    assert storage.read() is None
    storage.write({"t": {"1": {"a": 1}}})
    assert json.loads((tmp_path / "s.json").read_text()) == {"t": {"1": {"a": 1}}}
    assert not list(tmp_path.glob(".*.tmp"))
    assert AtomicJSONStorage(tmp_path / "s.json").read() == {"t": {"1": {"a": 1}}}


@pytest.mark.parametrize("content", ['{"users": {"1": ', "[1, 2]", "\x00\xff", "", " \n\t "])
def test_unreadable_state_is_refused_and_kept(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content, errors="surrogateescape")
    before = path.read_bytes()
    with pytest.raises(StateUnreadable) as err:
        TinyDbStore(tmp_path)
    assert str(path) in str(err.value) and "will not" in str(err.value)
    assert path.read_bytes() == before


def test_unreadable_archive_is_refused(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "jobs-2026-01.json").write_text("{broken")
    with pytest.raises(StateUnreadable, match=r"jobs-2026-01\.json"):
        TinyDbStore(tmp_path)


def test_jobs_archive_by_month_and_ids_never_repeat(tmp_path: Path) -> None:
    store = TinyDbStore(tmp_path)
    t = time.mktime((2026, 10, 15, 0, 0, 0, 0, 0, 0))
    ids = [store.insert_job({"state": "succeeded", "ended_at": t + i}) for i in range(3)]
    live = store.insert_job({"state": "running"})
    assert ids == [1, 2, 3] and live == 4
    assert store.archive_jobs(ids) == 3
    assert [j["id"] for j in store.hot_jobs()] == [4]
    assert store.get_job(2) == {"id": 2, "state": "succeeded", "ended_at": t + 1}
    assert [j["id"] for j in store.iter_jobs()] == [4, 3, 2, 1]
    store.archive_jobs([4])
    assert store.hot_jobs() == []
    assert store.insert_job({"state": "queued"}) == 5
    store.close()

    reopened = TinyDbStore(tmp_path)
    assert reopened.get_job(3) is not None and reopened.next_job_id() == 6
    assert all(p.name.startswith("jobs-2026") for p in (tmp_path / "archive").iterdir())


def test_hot_file_does_not_grow_with_history(tmp_path: Path) -> None:
    store = TinyDbStore(tmp_path)
    for _ in range(5):
        ids = [store.insert_job({"state": "succeeded", "ended_at": 1.7e9}) for _ in range(50)]
        store.archive_jobs(ids)
    assert len((tmp_path / "state.json").read_bytes()) < 2000
    assert len(list(store.iter_jobs())) == 250


# --- a change is kept in memory only once it is on disk ---------------------------------

BIG = 10**20  # beyond 64 bits: orjson refuses it ("Integer exceeds 64-bit range")


def _locked_store(state: Path) -> tuple[TinyDbStore, CommitLock]:
    lock = CommitLock()
    return TinyDbStore(state, lock), lock


def test_a_value_json_cannot_hold_is_refused_before_it_reaches_memory(tmp_path: Path) -> None:
    store, lock = _locked_store(tmp_path)
    with lock:
        first = store.insert_job({"state": "queued"})
    before = (tmp_path / "state.json").read_bytes()
    with pytest.raises(Unstorable, match="64-bit"), lock:
        store.insert_job({"state": "queued", "time_limit": BIG})
    with pytest.raises(Unstorable), lock:
        store.update_job(first, {"time_limit": BIG})
    with pytest.raises(Unstorable), lock:
        store.set_setting("usage", {1: 2.0})  # a key JSON cannot hold
    assert (tmp_path / "state.json").read_bytes() == before
    assert [j.get("time_limit") for j in store.hot_jobs()] == [None]
    with lock:
        second = store.insert_job({"state": "queued", "time_limit": 60})
    assert second > first and TinyDbStore(tmp_path).get_job(second)["time_limit"] == 60


def test_a_poisoned_commit_rolls_memory_back_and_later_writes_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: should a value slip past the check (a bug elsewhere), the
    commit that cannot serialise it throws the change away instead of refusing every
    later commit while memory runs ahead of the file."""
    store, lock = _locked_store(tmp_path)
    with lock:
        job = store.insert_job({"state": "queued"})
    monkeypatch.setattr(db, "check_storable", lambda value: None)
    with pytest.raises(CommitFailed, match="64-bit") as err, lock:
        store.update_job(job, {"time_limit": BIG})
        store.add_group({"name": "poisoned-with-it"})
    assert err.value.status == 503 and "nothing was changed" in err.value.message
    assert store.get_job(job) == {"id": job, "state": "queued"}
    assert store.get_group("poisoned-with-it") is None
    with lock:
        later = store.insert_job({"state": "queued"})
        store.add_group({"name": "after"})
    reopened = TinyDbStore(tmp_path)
    assert reopened.get_job(later) is not None and reopened.get_group("after") is not None
    assert reopened.get_job(job) == {"id": job, "state": "queued"}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failed_write_rolls_back_and_the_caller_hears_of_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    store, lock = _locked_store(tmp_path)
    with lock:
        kept = store.insert_job({"state": "queued"})
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def failing_fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    monkeypatch.setattr(os, "fdatasync", failing_fsync)  # the journal's appends
    with pytest.raises(CommitFailed, match=os.strerror(code)), lock:
        lost = store.insert_job({"state": "queued"})
        store.update_job(kept, {"state": "cancelled"})
    monkeypatch.setattr(os, "fsync", real_fsync)
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)
    assert [j["id"] for j in store.hot_jobs()] == [kept]
    assert store.get_job(kept)["state"] == "queued"
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written copy left on a full disk
    with lock:
        after = store.insert_job({"state": "queued"})
    assert after > lost  # the lost write's id is spent, not handed out again
    reopened = TinyDbStore(tmp_path)
    assert [j["id"] for j in reopened.hot_jobs()] == [kept, after]


def test_group_commit_fails_every_writer_whose_change_was_thrown_away(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writers' changes wait for one flush; it fails: both hear it, even the one
    that asks only after a later flush has succeeded."""
    storage = AtomicJSONStorage(tmp_path / "s.json", group_commit=True)
    storage.write({"n": 0})
    storage.commit()
    storage.write({"n": 1})
    first = storage.pending()
    storage.write({"n": 2})
    second = storage.pending()

    def disk_full(path: Path, data: bytes, mode: int = 0o600) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "atomic_write", disk_full)
    with pytest.raises(CommitFailed, match="No space left"):
        storage.commit(second)
    monkeypatch.undo()
    assert storage.read() == {"n": 0}
    storage.write({"n": 3})
    storage.commit(storage.pending())
    for waiter in (first, second):
        with pytest.raises(CommitFailed, match="rolled back"):
            storage.commit(waiter)
    storage.close()
    assert json.loads((tmp_path / "s.json").read_text()) == {"n": 3}


# --- ids never go backwards -------------------------------------------------------------


def test_ids_start_above_every_archive_and_job_directory(tmp_path: Path) -> None:
    """A restored (older) state.json knows neither the archives' ids nor the jobs whose
    directories exist: the next id is above all of them."""
    store = TinyDbStore(tmp_path)
    assert store.insert_job({"state": "queued"}) == 1
    store.close()
    backup = (tmp_path / "state.json").read_bytes()
    # Ids the restored file does not know: an archive written later, job directories.
    (tmp_path / "archive" / "jobs-2026-11.json").write_text(
        json.dumps({"jobs": {"7": {"id": 7}, "40": {"id": 40}}}))
    jobs = tmp_path / "jobs"
    for name in ("3", "41", "52.moved-aside", "not-a-job", "9" * 30):
        (jobs / name).mkdir(parents=True)
    (tmp_path / "state.json").write_bytes(backup)
    assert TinyDbStore(tmp_path).next_job_id() == 53
    assert TinyDbStore(tmp_path, jobs_dir=tmp_path / "elsewhere").next_job_id() == 41


def test_a_settled_holder_never_acts_on_a_change_that_is_then_rolled_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between a writer's release of the lock and its flush, a plain holder sees the
    change; one that holds `settled()` (the scheduler, which starts processes) waits
    for the flush and, when it fails, sees the state without the change."""
    store, lock = _locked_store(tmp_path)
    storage = store.db.storage
    flushing, go = threading.Event(), threading.Event()
    real_commit = storage.commit
    in_commit: list[str] = []

    def slow_full_disk(path: Path, data: bytes, mode: int = 0o600) -> None:
        flushing.set()
        go.wait(20)
        raise OSError(errno.ENOSPC, "No space left on device")

    def commit(upto: int | None = None) -> None:
        in_commit.append(threading.current_thread().name)
        real_commit(upto)

    monkeypatch.setattr(atomic, "atomic_write", slow_full_disk)
    monkeypatch.setattr(storage, "commit", commit)
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            with lock:
                store.insert_job({"state": "queued"})
        except CommitFailed as exc:
            failures.append(exc)

    a = threading.Thread(target=writer, name="writer")
    a.start()
    assert flushing.wait(20)
    with lock:
        assert [j["id"] for j in store.hot_jobs()] == [1]  # visible, not yet on disk
    seen: list[list[int]] = []

    def scheduler() -> None:
        with lock.settled():
            seen.append([j["id"] for j in store.hot_jobs()])

    s = threading.Thread(target=scheduler, name="scheduler")
    s.start()
    wait_for(lambda: "scheduler" in in_commit or not s.is_alive(), what="the scheduler")
    go.set()
    a.join(20)
    s.join(20)
    assert failures and seen == [[]]


# --- the history: archives read page by page, without the service's lock ---------------


def _history(tmp_path: Path) -> TinyDbStore:
    """Jobs 1..12 by alice and bob, archived into two months with ids interleaved
    (a job's month is its end's), and job 13 still hot."""
    store = TinyDbStore(tmp_path)
    oct_, nov = (time.mktime((2026, m, 15, 0, 0, 0, 0, 0, 0)) for m in (10, 11))
    for i in range(1, 13):
        store.insert_job({"user": "alice" if i % 2 else "bob",
                          "state": "failed" if i % 3 == 0 else "succeeded",
                          "submitted_at": float(i), "ended_at": nov if i % 4 else oct_})
    store.archive_jobs(list(range(1, 13)))
    store.insert_job({"user": "alice", "state": "running", "submitted_at": 13.0})
    return store


def _ids(store: TinyDbStore, **want: object) -> list[int]:
    rows = store.history.rows_matching(JobFilter(**want), store.archived_months())  # type: ignore[arg-type]
    return [r[0] for r in rows]


def test_archived_jobs_page_newest_first_by_cursor_and_filters(tmp_path: Path) -> None:
    store = _history(tmp_path)
    assert store.archived_months() == ["2026-11", "2026-10"]
    assert _ids(store) == list(range(12, 0, -1))
    assert _ids(store, before=9) == list(range(8, 0, -1))
    assert _ids(store, user="bob", before=9) == [8, 6, 4, 2]
    assert _ids(store, state="failed") == [12, 9, 6, 3]
    assert _ids(store, since=10.0) == [12, 11, 10]
    assert store.history.get(4, store.archived_months_of(4))["user"] == "bob"
    assert store.archived_top(9) == 8 and store.archived_top() == 12
    assert store.archived_count("alice") == 6 and store.archived_count(None, "failed") == 4
    assert TinyDbStore(tmp_path).archived_count("bob", "failed") == 2  # from the files


def test_an_archive_read_again_only_once_jobs_move_into_it(tmp_path: Path) -> None:
    store = _history(tmp_path)
    first = store.history.rows("2026-11")
    assert store.history.rows("2026-11") is first  # cached: the file did not change
    store.update_job(13, {"state": "succeeded",
                          "ended_at": time.mktime((2026, 11, 20, 0, 0, 0, 0, 0, 0))})
    store.archive_jobs([13])
    assert [r[0] for r in store.history.rows("2026-11")][:2] == [13, 11]
    assert store.history.rows("2026-10") is store.history.rows("2026-10")
