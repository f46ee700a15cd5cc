"""`LogView`: a job's log that follows its end as it grows, and can be searched
(matches highlighted, `next_match` jumps between them)."""

from __future__ import annotations

import codecs
import re

from rich.highlighter import Highlighter
from rich.text import Text
from textual.widgets import Log

MAX_LINES = 50_000


class SearchHighlighter(Highlighter):
    """Highlights every case-insensitive occurrence of a term."""

    def __init__(self) -> None:
        self.pattern: re.Pattern[str] | None = None

    def highlight(self, text: Text) -> None:
        if self.pattern is not None:
            text.highlight_regex(self.pattern, style="black on yellow")


class LogView(Log):
    """Append bytes with `feed`; `search(term)` highlights and jumps to the first match
    after the cursor line; `next_match(+1/-1)` moves between matches."""

    DEFAULT_CSS = """
    LogView {
        height: 1fr;
        background: $surface;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(highlight=True, max_lines=MAX_LINES, auto_scroll=True, id=id)
        self.highlighter = SearchHighlighter()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.term = ""
        self.match_line: int | None = None

    @property
    def following(self) -> bool:
        return self.auto_scroll

    def follow(self, on: bool) -> None:
        """Keep the end in view as lines arrive (or stop, to read back)."""
        self.auto_scroll = on
        if on:
            self.scroll_end(animate=False)

    def feed(self, data: bytes) -> None:
        """Append raw log bytes (split UTF-8 sequences are joined across calls)."""
        text = self._decoder.decode(data)
        if text:
            self.write(text.replace("\r\n", "\n"))

    def search(self, term: str) -> int:
        """Highlight `term` and jump to its next occurrence; returns how many lines match."""
        assert isinstance(self.highlighter, SearchHighlighter)
        self.term = term
        self.highlighter.pattern = re.compile(re.escape(term), re.IGNORECASE) if term else None
        self.notify_style_update()
        self.refresh()
        self.match_line = None
        if not term:
            return 0
        count = len(self.matches())
        if count:
            self.next_match(+1, start=max(0, int(self.scroll_y) - 1))
        return count

    def matches(self) -> list[int]:
        """Line numbers that contain the search term."""
        if not self.term:
            return []
        needle = self.term.lower()
        return [i for i, line in enumerate(self.lines) if needle in line.lower()]

    def next_match(self, direction: int = 1, start: int | None = None) -> int | None:
        """Scroll to the next (+1) or previous (-1) matching line; stops following."""
        found = self.matches()
        if not found:
            return None
        here = (self.match_line if self.match_line is not None else int(self.scroll_y)) \
            if start is None else start - direction
        after = [i for i in found if (i - here) * direction > 0]
        line = (after[0] if direction > 0 else after[-1]) if after else (
            found[0] if direction > 0 else found[-1])
        self.match_line = line
        self.follow(False)
        self.scroll_to(y=max(0, line - self.size.height // 2), animate=False)
        return line
