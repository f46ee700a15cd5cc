"""Which bytes of a log came from stderr: the marks a job's owner writes are clipped,
sorted, merged and bounded before the daemon answers with them, and the answer reads
back on the client the same way."""

from __future__ import annotations

import os
from pathlib import Path

from nai_server.core.log_marks import clip_spans
from nai_server.host import stderr_marks
from nai_server.protocol.jobs import LogPiece, format_spans, parse_spans

RECORD = stderr_marks.RECORD


def test_spans_are_clipped_sorted_merged_and_garbage_skipped() -> None:
    records = [(50, 60), (0, 5), (58, 70), (9, 9), (30, 20), (100, 200), (-5, 2)]
    spans, cut = clip_spans(records, 1, 65, limit=10)
    assert spans == [(1, 5), (50, 65)] and cut is None


def test_more_spans_than_an_answer_holds_cut_the_answer_where_the_first_left_out_begins() -> None:
    records = [(i * 10, i * 10 + 5) for i in range(10)]
    spans, cut = clip_spans(records, 0, 100, limit=3)
    assert spans == [(0, 5), (10, 15), (20, 25)] and cut == 30


def _marks(tmp_path: Path, records: list[tuple[int, int]]) -> Path:
    (tmp_path / stderr_marks.MARKS_FILE).write_bytes(b"".join(RECORD.pack(*r) for r in records))
    return tmp_path


def test_the_marks_of_a_range_are_found_by_bisection_among_many(tmp_path: Path) -> None:
    job = _marks(tmp_path, [(i * 100, i * 100 + 40) for i in range(100_000)])
    spans, cut = stderr_marks.read_spans(job, 5_000_020, 5_000_250, limit=10)
    assert spans == [(5_000_020, 5_000_040), (5_000_100, 5_000_140), (5_000_200, 5_000_240)]
    assert cut is None


def test_a_job_without_marks_or_with_a_huge_sparse_file_has_no_spans(tmp_path: Path) -> None:
    assert stderr_marks.read_spans(tmp_path, 0, 100, 10) == ([], None)  # an older daemon's job
    with open(tmp_path / stderr_marks.MARKS_FILE, "wb") as f:
        f.truncate(1 << 40)  # a terabyte of zeros: every record empty
    assert stderr_marks.read_spans(tmp_path, 0, 100, 10) == ([], None)


def test_a_fifo_or_a_link_in_place_of_the_marks_gives_no_spans(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / stderr_marks.MARKS_FILE)
    assert stderr_marks.read_spans(tmp_path, 0, 100, 10) == ([], None)  # never blocks
    os.unlink(tmp_path / stderr_marks.MARKS_FILE)
    other = tmp_path / "elsewhere"
    other.write_bytes(RECORD.pack(0, 50))
    os.symlink(other, tmp_path / stderr_marks.MARKS_FILE)
    assert stderr_marks.read_spans(tmp_path, 0, 100, 10) == ([], None)


def test_the_header_reads_back_as_it_was_written_and_junk_in_it_is_skipped() -> None:
    spans = [(1010, 1020), (1030, 1100)]
    assert parse_spans(1000, 200, format_spans(1000, spans)) == tuple(spans)
    assert parse_spans(1000, 50, "junk,5-3,0-999,10-20,x-y,15-30") == ((1010, 1030),)


def test_a_piece_splits_into_stdout_and_stderr_parts_in_order() -> None:
    piece = LogPiece(100, b"out\nERR\nout2\nERR2\n", 200, ((104, 108), (113, 118)))
    assert piece.parts() == [(b"out\n", False), (b"ERR\n", True), (b"out2\n", False),
                             (b"ERR2\n", True)]
    assert LogPiece(0, b"plain", 5).parts() == [(b"plain", False)]
