"""A log's bytes as a terminal would have left them (`log_text`), and the log view's
modules under the house limit."""

from __future__ import annotations

from pathlib import Path

from nai_tui.tui.widgets import log_text, log_view, log_window
from nai_tui.tui.widgets.log_text import clean_line, line_start, split_lines
from nai_tui.tui.widgets.log_window import grown_before, long_line_breaks


def test_progress_bars_colours_and_controls_are_what_a_terminal_shows() -> None:
    assert clean_line(b" 10%|#  \r 55%|#####\r100%|##########\r") == "100%|##########"
    assert clean_line(b"\x1b[31mred\x1b[0m and\tplain\x07") == "red and plain"


def test_lines_know_where_they_begin_in_the_whole_log() -> None:
    assert split_lines(b"one\ntwo\nthr", 100) == (["one", "two", "thr"], [100, 104, 108])
    assert split_lines(b"a\n", 0) == (["a"], [0])
    assert line_start(b"tail of a line\nwhole\n", 5) == 15  # read from mid-line
    assert line_start(b"whole\n", 0) == 0
    # Inside a line longer than the read: a piece of it, from a `\r` redraw if any.
    assert line_start(b"xxxxxxxx\n", 5) == 0
    assert line_start(b"ab\r 10%\r 20%\n", 5) == 3
    assert split_lines(b"abcdef\ngh", 10, [13, 17]) == (["abc", "def", "gh"], [10, 13, 17])


def test_a_line_longer_than_a_read_is_cut_into_pieces_after_a_redraw() -> None:
    raw = b"ok\n" + b"\r 1%|#" * 4 + b"\nend"
    assert long_line_breaks(raw, 100, [], 100, 12) == [103 + 7, 103 + 19]  # each after a redraw
    assert long_line_breaks(b"x" * 25, 0, [], 0, 10) == [10, 20]


def test_reading_back_inside_a_long_line_always_adds_a_piece() -> None:
    window = (1000, b"tail\nEND\n", [])
    start, raw, breaks = grown_before(window, b"x" * 100, 900, keep_to=1010, size=10**6,
                                      ahead=0)
    assert (start, raw[:100], breaks) == (900, b"x" * 100, [1000])


def test_the_log_view_modules_stay_under_the_house_limit() -> None:
    for module in (log_view, log_text, log_window):
        assert module.__file__ is not None
        assert len(Path(module.__file__).read_text().splitlines()) < 400, module.__name__
