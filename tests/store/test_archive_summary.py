"""A store opens from the summaries kept per archive file, reading no archive, and
answers as if it had read them all; an archive replaced since its summary was made
(an edit, a restored backup, damage) is read again, and a damaged one still keeps the
daemon from starting."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from nai_server.store import archive_summary, archiving
from nai_server.store.atomic import StateUnreadable
from nai_server.store.db import TinyDbStore

T = 1.7e9


def _seeded(path: Path) -> TinyDbStore:
    store = TinyDbStore(path)
    for month in range(3):
        ids = [store.insert_job({"user": f"u{i % 2}", "state": "succeeded", "gpus": [0],
                                 "started_at": T, "ended_at": T + month * 40 * 86400,
                                 "code_tree": "c" * 64, "output_tree": f"{i:064d}"})
               for i in range(5)]
        store.archive_jobs(ids)
    return store


def _answers(store: TinyDbStore) -> tuple:
    return (store.next_job_id(), store.archived_count(), store.archived_count("u0"),
            [j.id for j in store.job_summaries()],
            [j.id for j in store.archived_using("c" * 64)],
            [j.id for j in store.archived_using(f"{3:064d}")])


def test_a_store_opens_from_its_summaries_without_reading_an_archive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _seeded(tmp_path)
    expected = _answers(store)
    store.close()
    assert len(list((tmp_path / "archive-summaries").glob("jobs-*.summary"))) == 3
    assert all(p.name.startswith("jobs-") for p in (tmp_path / "archive").iterdir())

    def no_read(path: Path) -> None:
        raise AssertionError(f"{path} was read")

    copy = tmp_path.with_name(f"{tmp_path.name}-copy")
    shutil.copytree(tmp_path, copy)  # a state dir restored whole, times kept
    monkeypatch.setattr(archiving, "read_json_file", no_read)
    reopened = TinyDbStore(tmp_path)
    assert _answers(reopened) == expected
    assert _answers(TinyDbStore(copy)) == expected
    monkeypatch.undo()
    assert reopened.get_job(7)["output_tree"] == f"{1:064d}"  # the archives are there


def test_an_archive_changed_since_its_summary_is_read_again(tmp_path: Path) -> None:
    _seeded(tmp_path).close()
    archive = sorted((tmp_path / "archive").glob("jobs-*.json"))[-1]
    data = json.loads(archive.read_text())
    data["jobs"]["99"] = {"id": 99, "user": "u9", "state": "failed"}  # a restored backup
    archive.write_text(json.dumps(data))
    reopened = TinyDbStore(tmp_path)
    assert reopened.next_job_id() == 100 and reopened.archived_count("u9") == 1
    reopened.close()
    # Damage refuses the start, summary or not.
    archive.write_text(archive.read_text()[:-20])
    with pytest.raises(StateUnreadable, match=archive.name):
        TinyDbStore(tmp_path)


def test_an_unreadable_summary_is_made_again(tmp_path: Path) -> None:
    store = _seeded(tmp_path)
    expected = _answers(store)
    store.close()
    for summary in (tmp_path / "archive-summaries").iterdir():
        summary.write_bytes(b"\x00garbage")
    assert _answers(TinyDbStore(tmp_path)) == expected
    archive = sorted((tmp_path / "archive").glob("jobs-*.json"))[0]
    assert archive_summary.load(archive) is not None  # made anew at the start
    os.utime(archive)  # touched: no longer the file it was made of
    assert archive_summary.load(archive) is None


def test_a_summary_of_an_earlier_format_is_made_again(tmp_path: Path) -> None:
    """Summaries written before facts gained a field (format 2: nine fields, no GPUs held
    elsewhere) are not read as if they had it: every question over the archive would fail
    to unpack them, the scheduler's tick among them."""
    import marshal
    import sys

    store = _seeded(tmp_path)
    expected = _answers(store)
    store.close()
    for summary in (tmp_path / "archive-summaries").iterdir():
        _, made_of, high, counts, facts = marshal.loads(summary.read_bytes())
        old = [fact[:9] for fact in facts]
        summary.write_bytes(marshal.dumps(((2, *sys.version_info[:2]), made_of, high, counts,
                                           old)))  # fmt: skip
    reopened = TinyDbStore(tmp_path)
    assert _answers(reopened) == expected
    assert {job.gpus_elsewhere for job in reopened.job_summaries([])} == {0}
