"""A log's bytes as a terminal would have left them (`log_text`), and the log view's
modules under the house limit."""

from __future__ import annotations

from pathlib import Path

from nai_tui.tui.widgets import log_text, log_view
from nai_tui.tui.widgets.log_text import clean_line, line_start, split_lines


def test_progress_bars_colours_and_controls_are_what_a_terminal_shows() -> None:
    assert clean_line(b" 10%|#  \r 55%|#####\r100%|##########\r") == "100%|##########"
    assert clean_line(b"\x1b[31mred\x1b[0m and\tplain\x07") == "red and plain"


def test_lines_know_where_they_begin_in_the_whole_log() -> None:
    assert split_lines(b"one\ntwo\nthr", 100) == (["one", "two", "thr"], [100, 104, 108])
    assert split_lines(b"a\n", 0) == (["a"], [0])
    assert line_start(b"tail of a line\nwhole\n", 5) == 15  # read from mid-line
    assert line_start(b"whole\n", 0) == 0


def test_the_log_view_modules_stay_under_the_house_limit() -> None:
    for module in (log_view, log_text):
        assert module.__file__ is not None
        assert len(Path(module.__file__).read_text().splitlines()) < 400, module.__name__
