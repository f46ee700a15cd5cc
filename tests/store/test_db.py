"""The TinyDB store: atomic files, refusal of unreadable state, the job archive."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nai_server.store.atomic import AtomicJSONStorage, StateUnreadable
from nai_server.store.db import TinyDbStore


def test_atomic_storage_replaces_whole_file(tmp_path: Path) -> None:
    storage = AtomicJSONStorage(tmp_path / "s.json")
    assert storage.read() is None
    storage.write({"t": {"1": {"a": 1}}})
    assert json.loads((tmp_path / "s.json").read_text()) == {"t": {"1": {"a": 1}}}
    assert not list(tmp_path.glob(".*.tmp"))
    assert AtomicJSONStorage(tmp_path / "s.json").read() == {"t": {"1": {"a": 1}}}


@pytest.mark.parametrize("content", ['{"users": {"1": ', "[1, 2]", "\x00\xff"])
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
