"""Search over a job's log: every match found once, across the edges of the chunks the
server reads, forward and backward, within the bounds of one call."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nai_server.app import logs


def jobs_at(job_dir: Path) -> Any:
    return SimpleNamespace(log_dir=lambda caller, job_id: job_dir)


def every(data: bytes, needle: bytes) -> list[int]:
    return [i for i in range(len(data)) if data.lower().startswith(needle.lower(), i)]


@pytest.mark.parametrize("backward", [False, True])
def test_search_finds_each_match_once_across_chunks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backward: bool) -> None:
    monkeypatch.setattr(logs, "LOG_SEARCH_CHUNK", 7)
    monkeypatch.setattr(logs, "LOG_SEARCH_SCAN", 1 << 20)
    rng = random.Random(5)
    data = bytes(rng.choice(b"abAB\n") for _ in range(3000))
    (tmp_path / "log").write_bytes(data)
    jobs = jobs_at(tmp_path)
    for needle in (b"ab", b"aBa", b"abab\nba"):
        start = len(data) if backward else 0
        got = logs.log_search(jobs, None, 1, needle.decode(), start, backward=backward,
                              limit=1000)
        want = every(data, needle)
        assert got.offsets == (want[::-1] if backward else want)[:1000]
        middle = logs.log_search(jobs, None, 1, needle.decode(), 1500, backward=backward,
                                 limit=1000).offsets
        assert middle == ([i for i in want if i < 1500][::-1] if backward
                          else [i for i in want if i >= 1500])


def test_a_call_reads_a_bounded_amount_and_says_where_to_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "LOG_SEARCH_CHUNK", 100)
    monkeypatch.setattr(logs, "LOG_SEARCH_SCAN", 300)
    (tmp_path / "log").write_bytes(b"x" * 1000 + b"needle" + b"y" * 1000)
    jobs = jobs_at(tmp_path)
    offset, calls = 0, 0
    while True:
        calls += 1
        page = logs.log_search(jobs, None, 1, "NEEDLE", offset)
        if page.offsets or page.next is None:
            break
        offset = page.next
    assert page.offsets == [1000] and 3 <= calls <= 5
    offset, calls = 2006, 0
    while True:
        calls += 1
        page = logs.log_search(jobs, None, 1, "needle", offset, backward=True)
        if page.offsets or page.next is None:
            break
        assert page.next < offset
        offset = page.next
    assert page.offsets == [1000] and 3 <= calls <= 5


def test_ranges_are_capped_and_missing_logs_are_empty(tmp_path: Path) -> None:
    jobs = jobs_at(tmp_path)
    assert logs.log_range(jobs, None, 1, 0, 10) == (b"", 0)
    (tmp_path / "log").write_bytes(b"z" * (logs.MAX_LOG_RANGE + 10))
    data, size = logs.log_range(jobs, None, 1, 5, 1 << 40)
    assert len(data) == logs.MAX_LOG_RANGE and size == logs.MAX_LOG_RANGE + 10
    assert logs.log_range(jobs, None, 1, size + 1, 10) == (b"", size)
    with pytest.raises(logs.Invalid):
        logs.log_range(jobs, None, 1, -1, 10)
    with pytest.raises(logs.Invalid):
        logs.log_search(jobs, None, 1, "x" * 300)


def test_matches_are_found_lazily_in_both_directions() -> None:
    from nai_server.app.logs import _find_all

    chunk = b"aaaa-aba-aa"
    forward = list(_find_all(chunk, b"aa"))
    assert forward == [0, 1, 2, 9]
    assert list(_find_all(chunk, b"aa", backward=True)) == forward[::-1]
    assert list(_find_all(chunk, b"a", backward=True)) == list(_find_all(chunk, b"a"))[::-1]
    many = _find_all(b"a" * (1 << 20), b"a")  # a caller that has enough stops the scan
    assert next(many) == 0 and next(many) == 1
