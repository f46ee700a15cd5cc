"""The log view's window (log bytes [start, start + len(raw)) and where pieces of lines
too long to read whole begin) grown by a read after or before it: pure functions.

Each trims the far side back to `size` bytes, but never into what the caller keeps
(the screen, and `ahead` bytes on the side it trims), so that a read on one side never
undoes the one before it on the other, however long the lines."""

from __future__ import annotations

import bisect

from nai_tui.tui.widgets.log_text import line_start

Window = tuple[int, bytes, list[int]]  # start, raw, breaks


def long_line_breaks(raw: bytes, start: int, breaks: list[int], since: int,
                     longest: int) -> list[int]:
    """`breaks` (sorted) with more where a line of `raw` (read from `start`) from the
    one holding offset `since` on runs longer than `longest` bytes: cut into pieces at
    most that long, each after a `\r` redraw in its second half where there is one."""
    out = sorted(breaks)
    begin = max([raw.rfind(b"\n", 0, max(0, since - start)) + 1,
                 *(b - start for b in out if b <= since)])
    while begin < len(raw):
        newline = raw.find(b"\n", begin)
        stop = len(raw) if newline < 0 else newline
        later = [b - start for b in out if begin < b - start < stop]
        stop = min([stop, *later])
        if stop - begin > longest:
            redraw = raw.rfind(b"\r", begin + longest // 2, begin + longest)
            stop = redraw + 1 if redraw >= 0 else begin + longest
            bisect.insort(out, start + stop)
        elif stop == newline:
            stop += 1
        begin = stop
    return out


def grown_after(window: Window, data: bytes, *, keep_from: int, size: int, ahead: int,
                longest: int) -> Window:
    """`window` with `data` (read at its end) added; the front dropped, at a line's
    start where it can be, but never past `keep_from` - `ahead`; a line grown longer
    than `longest` cut into pieces (long_line_breaks)."""
    start, raw, breaks = window
    end = start + len(raw)
    raw = raw + data
    breaks = long_line_breaks(raw, start, breaks, end, longest)
    limit = max(size, start + len(raw) - keep_from + ahead)
    if len(raw) > limit:
        cut = raw.find(b"\n", len(raw) - limit) + 1
        if not cut or start + cut > keep_from:
            cut = len(raw) - limit
        raw, start = raw[cut:], start + cut
    return start, raw, [b for b in breaks if start < b < start + len(raw)]


def grown_before(window: Window, data: bytes, at: int, *, keep_to: int, size: int,
                 ahead: int) -> Window:
    """`window` with `data` (read from `at` to its start) added from its first line's
    start on (line_start): never nothing, so each read back shows more, even inside a
    line longer than a read, which then shows in pieces. The back dropped, after a
    line's end where it can be, but never before `keep_to` + `ahead`."""
    start, raw, breaks = window
    cut = line_start(data, at)
    piece = [] if data.endswith(b"\n") else [start]  # the old first line: a piece
    new_start, raw = at + cut, data[cut:] + raw
    limit = max(size, keep_to + ahead - new_start)
    if len(raw) > limit:
        keep = raw.rfind(b"\n", 0, limit) + 1
        if new_start + keep < keep_to + ahead:
            keep = limit
        raw = raw[:keep]
    return new_start, raw, [b for b in piece + breaks if new_start < b < new_start + len(raw)]
