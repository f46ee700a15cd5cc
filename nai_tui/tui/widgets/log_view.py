"""`LogView`: a pager over a job's log of any length, as `less` is over a file.

The log stays on the server. The view holds a window of at most MAX_WINDOW bytes around
what is on screen, read by byte offset (`LogSource.read`), and reads more before or
after as you scroll; Home and End jump to either end of the whole log, and search runs
on the server (`LogSource.search`) across all of it. Only the lines on screen are
drawn (the Line API). Following keeps the end in view as the log grows, and the status
line at the bottom says so. A line a progress bar redrew with `\\r` shows as its last
state, as a terminal would have left it; one longer than a read shows in pieces, each
so. A line the job wrote to stderr (`LogPiece.stderr`) is in the theme's error colour.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.strip import Strip
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from nai_server.protocol import LogMatches, NaiError
from nai_server.protocol.jobs import LogPiece
from nai_tui.tui.widgets.log_text import (
    from_stderr,
    line_start,
    nearest_match,
    read_whole,
    split_lines,
    status_line,
    window_spans,
)
from nai_tui.tui.widgets.log_window import grown_after, grown_before

CHUNK = 256 << 10  # bytes read per request
MAX_WINDOW = 2 << 20  # bytes kept around the view
MARGIN = 200  # lines kept ready above and below the screen before reading more
MAX_SEARCH_CALLS = 64  # server calls one search makes before it gives up
@dataclass
class LogSource:
    """How the view reads the log: `read(offset, length) -> LogPiece` and
    `search(text, offset, backward) -> LogMatches`."""

    read: Callable[[int, int], LogPiece]
    search: Callable[[str, int, bool], LogMatches]


class LogView(Widget, can_focus=True):
    """Scroll with the arrows, j/k, PgUp/PgDn, ctrl+d/u; g/Home and G/End jump to the
    start and the end; `follow(True)` keeps the end in view."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "scroll_lines(-1)", "Up", show=False),
        Binding("down,j", "scroll_lines(1)", "Down", show=False),
        Binding("pageup,ctrl+b", "scroll_pages(-1)", "Page up", show=False),
        Binding("pagedown,ctrl+f,space", "scroll_pages(1)", "Page down", show=False),
        Binding("ctrl+u", "scroll_pages(-0.5)", "Half page up", show=False),
        Binding("ctrl+d", "scroll_pages(0.5)", "Half page down", show=False),
        Binding("left,h", "scroll_sideways(-8)", "Left", show=False),
        Binding("right,l", "scroll_sideways(8)", "Right", show=False),
        Binding("home,g", "start", "Start of log", show=False,
                tooltip="Jump to the log's first line"),
        Binding("end,G", "end", "End of log", show=False,
                tooltip="Jump to the log's end and follow it"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"log-view--stderr"}
    DEFAULT_CSS = """
    LogView {
        height: 1fr;
        background: $surface;
    }
    LogView > .log-view--stderr {
        color: $text-error;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source: LogSource | None = None
        self.size_known = 0  # the log's size, as last heard
        self.start = 0  # the window: log bytes [start, start + len(raw))
        self.raw = b""
        self.lines: list[str] = []
        self.starts: list[int] = []
        self.breaks: list[int] = []  # where a piece of a line too long to read whole begins
        self.spans: list[tuple[int, int]] = []  # the window's bytes that came from stderr
        self.stderr: list[bool] = []  # per line: whether it came from stderr
        self.top = 0  # the window's line shown first
        self.x = 0  # columns scrolled sideways
        self.following = True
        self.message: str | None = None  # shown instead of the log (e.g. not ours to read)
        self.problem: str | None = None  # the last read that failed
        self.term = ""
        self.match_offset: int | None = None
        self.searching = False
        self._busy = False
        self._gen = 0

    # --- reading the window -------------------------------------------------------------

    @property
    def end(self) -> int:
        return self.start + len(self.raw)

    @property
    def rows(self) -> int:
        return max(1, self.size.height - 1)  # the last row is the status line

    def _set_window(self, start: int, raw: bytes, top: int,
                    spans: list[tuple[int, int]], breaks: list[int] | None = None) -> None:
        self.start, self.raw = start, raw
        self.breaks = breaks or []
        self.lines, self.starts = split_lines(raw, start, self.breaks)
        self.spans = window_spans(spans, start, self.end)
        self.stderr = from_stderr(self.starts, self.end, self.spans)
        self.top = max(0, min(top, len(self.lines) - 1))
        self.refresh()

    def _read(self, offset: int, length: int) -> LogPiece | None:
        """One read, in a worker thread; None (and the problem shown) if it failed."""
        assert self.source is not None
        try:
            return read_whole(self.source.read, offset, length)
        except NaiError as exc:  # shown; the view stays usable
            self.app.call_from_thread(self._failed, str(exc))
            return None

    def _failed(self, why: str) -> None:
        self.problem, self._busy = why, False
        self.refresh()

    def _load(self, work: Callable[[int], None], *, jump: bool = False) -> None:
        """Run `work(generation)` in a thread. A jump goes ahead of a read on its way
        (whose result is then dropped); other reads wait for the one on its way."""
        if self.source is None or (self._busy and not jump):
            return
        self._busy = True
        self._gen += 1
        gen = self._gen
        self.run_worker(lambda: work(gen), thread=True, group="log-view", exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A read that failed unexpectedly must not leave the view waiting for it."""
        if event.state == WorkerState.ERROR and event.worker.group in ("log-view",
                                                                       "log-search"):
            self.searching = False
            self._failed(f"reading the log failed: {event.worker.error}")

    def _current(self, gen: int, size: int) -> bool:
        """Whether a result read for generation `gen` is still wanted."""
        if gen != self._gen:
            return False
        self._busy, self.problem = False, None
        self.size_known = max(self.size_known, size)
        return True

    def grow(self, size: int) -> None:
        """The log is now `size` bytes long: follow it, if following."""
        self.size_known = max(self.size_known, size)
        if self.following and self.end < self.size_known:
            self._load(self._read_tail if self.size_known - self.end > CHUNK
                       else self._read_after)
        self.refresh()

    def _read_tail(self, gen: int) -> None:
        at = max(0, self.size_known - CHUNK)
        got = self._read(at, CHUNK)
        if got is not None:
            self.app.call_from_thread(self._apply_at, gen, got, None)

    def _read_at(self, offset: int, gen: int) -> None:
        at = max(0, offset - CHUNK // 2)
        got = self._read(at, CHUNK)
        if got is not None:
            self.app.call_from_thread(self._apply_at, gen, got, offset)

    def _apply_at(self, gen: int, got: LogPiece, show: int | None) -> None:
        """A fresh window read from `got.offset`; `show` is the offset to bring to the
        middle (None: the end)."""
        at, data = got.offset, got.data
        if not self._current(gen, got.size):
            return
        cut = line_start(data, at)
        if show is not None and at + cut > show:  # inside a line longer than the read
            cut = 0
        self._set_window(at + cut, data[cut:], 0, list(got.stderr))
        if show is None:
            self.top = max(0, len(self.lines) - self.rows)
        else:
            self.top = max(0, self._line_of(show) - self.rows // 2)
        self._after_move()

    def _read_after(self, gen: int) -> None:
        got = self._read(self.end, CHUNK)
        if got is not None:
            self.app.call_from_thread(self._apply_after, gen, got)

    def _apply_after(self, gen: int, got: LogPiece) -> None:
        if not self._current(gen, got.size) or not got.data:
            self.refresh()
            return
        top_at = self._top_offset()
        start, raw, breaks = grown_after((self.start, self.raw, self.breaks), got.data,
                                         keep_from=top_at, size=MAX_WINDOW, ahead=MAX_WINDOW // 4,
                                         longest=CHUNK)
        self._set_window(start, raw, 0, [*self.spans, *got.stderr], breaks)
        self.top = self._line_of(max(top_at, start))
        self._after_move()

    def _read_before(self, gen: int) -> None:
        at = max(0, self.start - CHUNK)
        got = self._read(at, self.start - at)
        if got is not None:
            self.app.call_from_thread(self._apply_before, gen, got)

    def _apply_before(self, gen: int, got: LogPiece) -> None:
        at, data = got.offset, got.data
        if not self._current(gen, got.size) or not data:
            self.refresh()
            return
        top_at, bottom = self._top_offset(), self._bottom()
        start, raw, breaks = grown_before((self.start, self.raw, self.breaks), data, at,
                                          keep_to=bottom, size=MAX_WINDOW, ahead=MAX_WINDOW // 4)
        self._set_window(start, raw, 0, [*got.stderr, *self.spans], breaks)
        self.top = self._line_of(top_at)
        self._after_move()

    def _top_offset(self) -> int:
        return self.starts[self.top] if self.starts else self.start

    def _bottom(self) -> int:
        """Where the lines below the screen begin (the window's end, if none are)."""
        below = self.top + self.rows
        return self.starts[below] if below < len(self.starts) else self.end

    def _line_of(self, offset: int) -> int:
        """The window's line holding byte `offset` of the log."""
        return max(0, bisect.bisect_right(self.starts, offset) - 1)

    def _after_move(self) -> None:
        """Read more where the view comes near the window's edge (MARGIN lines, or a
        quarter window of bytes if less: long lines); keep following."""
        top, bottom = self._top_offset(), self._bottom()
        if self.following:
            self.top = max(0, len(self.lines) - self.rows)
            if self.end < self.size_known:
                self._load(self._read_after)
        elif self.top < MARGIN and self.start > 0 and top - self.start < MAX_WINDOW // 4:
            self._load(self._read_before)
        elif (self.top + self.rows + MARGIN > len(self.lines) and self.end < self.size_known
              and self.end - bottom < MAX_WINDOW // 4):
            self._load(self._read_after)
        self.refresh()

    # --- moving -------------------------------------------------------------------------

    def follow(self, on: bool) -> None:
        """Keep the end in view as the log grows (or stop, to read back)."""
        self.following = on
        if on:
            self.action_end()
        self.refresh()

    def scroll_by(self, lines: int) -> None:
        if lines < 0:
            self.following = False
        last = max(0, len(self.lines) - self.rows)
        self.top = max(0, min(self.top + lines, last))
        self._after_move()

    def action_scroll_lines(self, lines: int) -> None:
        self.scroll_by(lines)

    def action_scroll_pages(self, pages: float) -> None:
        self.scroll_by(int(pages * self.rows) or (1 if pages > 0 else -1))

    def action_scroll_sideways(self, columns: int) -> None:
        self.x = max(0, self.x + columns)
        self.refresh()

    def action_start(self) -> None:
        """Jump to the log's first line."""
        self.following = False
        if self.start == 0:
            self.top = 0
            self._after_move()
        else:
            self._load(lambda gen: self._read_at(0, gen), jump=True)

    def action_end(self) -> None:
        """Jump to the log's end, and follow it."""
        self.following = True
        if self.end >= self.size_known:
            self._after_move()
        else:
            self._load(self._read_tail, jump=True)

    def goto(self, offset: int) -> None:
        """Bring byte `offset` of the log into view, in the middle of the screen."""
        self.following = False
        if self.start <= offset < self.end:
            self.top = max(0, self._line_of(offset) - self.rows // 2)
            self._after_move()
        else:
            self._load(lambda gen: self._read_at(offset, gen), jump=True)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self.scroll_by(3)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self.scroll_by(-3)

    def on_resize(self) -> None:
        self._after_move()

    # --- search (on the server, across the whole log) -----------------------------------

    def search(self, term: str, direction: int = 1, *,
               done: Callable[[int | None], None] | None = None) -> None:
        """Find `term` after (or before, `direction` -1) the current match, or the top
        line, wrapping around the log once; `done(offset or None)` is called after."""
        self.term = term
        self.refresh()
        if not term or self.source is None:
            return
        here = self.match_offset if self.match_offset is not None else self._top_offset()
        origin = here + 1 if direction > 0 else here
        self.searching = True
        self.run_worker(lambda: self._search(term, origin, direction < 0, done), thread=True,
                        group="log-search", exclusive=True, exit_on_error=False)

    def _search(self, term: str, origin: int, backward: bool,
                done: Callable[[int | None], None] | None) -> None:
        """Runs in a thread: from `origin` to the log's end (start), then once around."""
        assert self.source is not None
        found: int | None = None
        try:
            found = nearest_match(self.source.search, term, origin, backward,
                                  MAX_SEARCH_CALLS)
        except NaiError as exc:  # shown; the view stays usable
            self.app.call_from_thread(self._failed, str(exc))
        self.app.call_from_thread(self._found, term, found, done)

    def _found(self, term: str, offset: int | None,
               done: Callable[[int | None], None] | None) -> None:
        self.searching = False
        if term == self.term and offset is not None:
            self.match_offset = offset
            self.goto(offset)
        if done is not None:
            done(offset)
        self.refresh()

    # --- drawing ------------------------------------------------------------------------

    def show_message(self, text: str) -> None:
        """Show `text` instead of the log (a log we may not read, say)."""
        self.message = text
        self.refresh()

    def status(self) -> str:
        """The status line: where the view is in the log, and whether it follows."""
        if self.problem:
            return f" {self.problem}"
        at = None if self.start == 0 and self.top == 0 else self._top_offset()
        return status_line(self.size_known, at, following=self.following, term=self.term,
                           searching=self.searching)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if y == self.size.height - 1:
            style = base + Style(reverse=True, bold=self.following)
            return Strip([Segment(self.status(), style)]).crop_extend(0, width, style)
        if self.message is not None:
            text = Text(self.message if y == 0 else "", style="italic")
        else:
            index = self.top + y
            if index >= len(self.lines):
                return Strip.blank(width, base)
            text = Text(self.lines[index])
            if self.stderr[index]:
                text.stylize(self.get_component_rich_style("log-view--stderr"))
            if self.term:
                text.highlight_words([self.term], "black on yellow", case_sensitive=False)
            if self.match_offset is not None and self._line_of(self.match_offset) == index \
                    and self.start <= self.match_offset < self.end:
                text.stylize("bold underline")
        segments = list(text.render(self.app.console))
        return Strip(segments).crop_extend(self.x, self.x + width, base).apply_style(base)
