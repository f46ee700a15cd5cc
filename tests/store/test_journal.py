"""The hot state's journal: a commit that changed only jobs appends a record; a kill
at any byte of it loses nothing acknowledged, a cut last record is dropped and cut off,
damage with records after it is refused, and a journal older than its state file is
never replayed over it."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from nai_server.store import journal
from nai_server.store.atomic import CommitFailed, CommitLock, StateUnreadable
from nai_server.store.db import TinyDbStore


def _store(path: Path) -> tuple[TinyDbStore, CommitLock]:
    lock = CommitLock()
    return TinyDbStore(path, lock), lock


def _ids(path: Path) -> list[int]:
    return sorted(int(k) for k in journal.read_state(path / "state.json")["jobs"])


def _jobs_of(path: Path) -> dict[int, str]:
    store = TinyDbStore(path)
    try:
        return {d["id"]: d["state"] for d in store.hot_jobs()}
    finally:
        store.db.storage._data = None  # no close: a clean close folds the journal


def test_job_changes_go_to_the_journal_and_a_clean_close_folds_them_in(
        tmp_path: Path) -> None:
    store, lock = _store(tmp_path)
    state = (tmp_path / "state.json").read_bytes()
    for _ in range(5):
        with lock:
            job = store.insert_job({"state": "queued"})
            store.update_job(job, {"state": "running"})
    assert (tmp_path / "state.json").read_bytes() == state  # not rewritten
    assert (tmp_path / "state.journal").stat().st_size > 0
    assert _ids(tmp_path) == [1, 2, 3, 4, 5]
    with lock:
        store.add_group({"name": "g"})  # not a job: the state file is written whole
    assert (tmp_path / "state.json").read_bytes() != state
    store.close()
    assert not (tmp_path / "state.journal").exists()
    assert journal.read_state(tmp_path / "state.json")["jobs"]["5"]["state"] == "running"


def test_a_cut_at_any_byte_loses_no_acknowledged_record(tmp_path: Path) -> None:
    """Truncate the journal at random points (a kill while appending): each commit
    acknowledged before the cut's record is there after a restart, the torn record is
    dropped and cut off, and the next commits go on after it."""
    source = tmp_path / "source"
    store, lock = _store(source)
    ends = []  # the journal's size after each acknowledged commit, and what it held
    for i in range(40):
        with lock:
            job = store.insert_job({"state": "queued", "n": i})
            if i % 3 == 0:
                store.update_job(job, {"state": "cancelled"})
        ends.append((os.path.getsize(source / "state.journal"), _jobs_of(source)))
    full = (source / "state.journal").read_bytes()
    rng = random.Random(14)
    for cut in sorted({*rng.sample(range(len(full)), 60), len(full) - 1, 1}):
        case = tmp_path / f"cut{cut}"
        case.mkdir()
        (case / "state.json").write_bytes((source / "state.json").read_bytes())
        (case / "state.journal").write_bytes(full[:cut])
        acknowledged = [jobs for size, jobs in ends if size <= cut]
        expected = acknowledged[-1] if acknowledged else {}
        assert _jobs_of(case) == expected, cut
        good = max((size for size, _ in ends if size <= cut), default=0)
        assert os.path.getsize(case / "state.journal") in (good, cut)  # cut back, or stale
        reopened, relock = _store(case)
        with relock:
            later = reopened.insert_job({"state": "queued"})
        assert later > max(expected, default=0)
        assert _jobs_of(case) == {**expected, later: "queued"}


def test_zeros_past_the_end_are_a_cut_and_damage_before_records_is_refused(
        tmp_path: Path) -> None:
    store, lock = _store(tmp_path)
    for _ in range(3):
        with lock:
            store.insert_job({"state": "queued"})
    path = tmp_path / "state.journal"
    whole = path.read_bytes()
    path.write_bytes(whole + b"\0" * 4096)  # a crash after the size grew, before the data
    assert sorted(_jobs_of(tmp_path)) == [1, 2, 3]
    assert path.read_bytes() == whole
    damaged = bytearray(whole)
    damaged[len(whole) // 2] ^= 0xFF  # inside a record with records after it
    path.write_bytes(bytes(damaged))
    with pytest.raises(StateUnreadable, match="damaged record"):
        TinyDbStore(tmp_path)
    with pytest.raises(StateUnreadable):
        journal.read_state(tmp_path / "state.json")
    assert path.read_bytes() == bytes(damaged)  # refused, and left as it was


def test_a_journal_older_than_its_state_file_is_not_replayed(tmp_path: Path) -> None:
    """A kill after a state file was written whole and before the next record: the old
    journal names the state file before, and what it says is in the new one already."""
    store, lock = _store(tmp_path)
    with lock:
        job = store.insert_job({"state": "queued"})
    stale = (tmp_path / "state.journal").read_bytes()
    with lock:
        store.update_job(job, {"state": "running"})
        store.add_group({"name": "g"})  # the state file, whole
    (tmp_path / "state.journal").write_bytes(stale)  # as the kill left it
    assert _jobs_of(tmp_path) == {job: "running"}
    # Restoring an older state file leaves the newer journal unused too.
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "state.journal").write_bytes((tmp_path / "state.journal").read_bytes())
    (backup / "state.json").write_text('{"jobs": {}}')
    assert _jobs_of(backup) == {}


def test_a_failed_append_is_rolled_back_and_the_next_commit_writes_the_file_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, lock = _store(tmp_path)
    with lock:
        kept = store.insert_job({"state": "queued"})
        store.insert_job({"state": "queued"})  # the journal is open: later commits append

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", disk_full)
    with pytest.raises(CommitFailed, match="No space left"), lock:
        store.update_job(kept, {"state": "cancelled"})
    monkeypatch.undo()
    assert store.get_job(kept)["state"] == "queued"
    assert _jobs_of(tmp_path)[kept] == "queued"  # the torn record went
    state = (tmp_path / "state.json").read_bytes()
    with lock:
        store.update_job(kept, {"state": "running"})
    assert (tmp_path / "state.json").read_bytes() != state
    assert _jobs_of(tmp_path)[kept] == "running"


def test_a_journal_past_its_slack_is_folded_into_the_state_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "JOURNAL_SLACK", 2000)
    store, lock = _store(tmp_path)
    for i in range(30):
        with lock:
            store.insert_job({"state": "queued", "pad": "x" * 200, "n": i})
    assert os.path.getsize(tmp_path / "state.journal") < 2000 + os.path.getsize(
        tmp_path / "state.json") + 1000
    assert len(_jobs_of(tmp_path)) == 30
    # Once folded, the next commits append again: the state file is not rewritten.
    state = (tmp_path / "state.json").read_bytes()
    with lock:
        store.insert_job({"state": "queued"})
    if (tmp_path / "state.json").read_bytes() != state:  # this one was the fold
        state = (tmp_path / "state.json").read_bytes()
    for _ in range(2):
        with lock:
            store.insert_job({"state": "queued"})
        assert (tmp_path / "state.json").read_bytes() == state
    assert len(_jobs_of(tmp_path)) == 33


def test_a_stale_journal_however_long_is_not_folded_at_every_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "JOURNAL_SLACK", 2000)
    store, lock = _store(tmp_path)
    for i in range(30):
        with lock:
            store.insert_job({"state": "queued", "pad": "x" * 200, "n": i})
    for i in range(4):  # a long journal, short of its fold
        with lock:
            store.update_job(1, {"n": i, "pad": "y" * 1000})
    with lock:  # the state file written whole, and much smaller: the journal is stale
        for job in range(2, 31):
            store.update_job(job, {"state": "succeeded", "ended_at": 1.7e9})
        store.archive_jobs(list(range(2, 31)))
    state = (tmp_path / "state.json").read_bytes()
    for i in range(3):  # the next record starts a new journal; no fold each time
        with lock:
            store.update_job(1, {"n": i})
        assert (tmp_path / "state.json").read_bytes() == state
    assert _jobs_of(tmp_path) == {1: "queued"}
