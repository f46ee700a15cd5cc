"""A log's bytes as a terminal would have shown them: lines split where they begin
(byte offsets into the whole log), a progress bar redrawn with `\\r` left as its last
state, colour escapes and other control characters removed. Plain functions."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from nai_server.protocol import MAX_ID, LogMatches, format_size
from nai_server.protocol.jobs import LogPiece
from nai_tui.tui.widgets.format import last_error_line

_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_line(raw: bytes) -> str:
    """What a terminal would have left of one line: the last state a `\\r` redrew
    (tqdm), without colour escapes or other control characters, tabs expanded."""
    raw = raw.rstrip(b"\r")
    if b"\r" in raw:
        raw = next((part for part in reversed(raw.split(b"\r")) if part.strip()), b"")
    text = raw.decode("utf-8", "replace")
    if "\x1b" in text:
        text = _ESCAPES.sub("", text)
    return _CONTROLS.sub("", text).expandtabs()


def split_lines(raw: bytes, start: int,
                breaks: Sequence[int] = ()) -> tuple[list[str], list[int]]:
    """The lines of `raw` (which begins at byte `start` of the log) and where each
    begins; a last line not ended by a newline is kept, an empty one is not. `breaks`
    (sorted log offsets) begin a line too: where a line too long to read whole was cut
    into pieces (line_start)."""
    parts = raw.split(b"\n")
    if parts and not parts[-1]:
        parts.pop()
    lines, starts, at = [], [], start
    cuts = iter(breaks)
    cut = next(cuts, None)
    for part in parts:
        end, begin = at + len(part), at
        while cut is not None and cut <= begin:
            cut = next(cuts, None)
        while cut is not None and cut < end:  # a piece of a long line
            lines.append(clean_line(raw[begin - start:cut - start]))
            starts.append(begin)
            begin, cut = cut, next(cuts, None)
        lines.append(clean_line(raw[begin - start:end - start]))
        starts.append(begin)
        at = end + 1
    return lines, starts


def line_start(data: bytes, offset: int) -> int:
    """Where the first line shown of `data` (read from `offset`) begins in it: after
    its first newline, as the bytes before it end a line that began before `offset`.
    When no line begins in `data` (it lies inside a line longer than it), the line is
    shown in pieces: this one begins after a `\r` redraw in its first half, if any, so
    that the piece before it ends on a whole state of a progress bar."""
    if offset == 0:
        return 0
    newline = data.find(b"\n")
    if 0 <= newline < len(data) - 1:
        return newline + 1
    return data.find(b"\r", 0, len(data) // 2) + 1


def from_stderr(starts: list[int], end: int, spans: list[tuple[int, int]]) -> list[bool]:
    """For each line (beginning at `starts`, the last ending at `end`), whether most of
    its bytes came from stderr (`spans`: sorted [start, end) offsets of the log)."""
    flags, at = [], 0
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else end
        while at < len(spans) and spans[at][1] <= start:
            at += 1
        covered, j = 0, at
        while j < len(spans) and spans[j][0] < stop:
            covered += min(stop, spans[j][1]) - max(start, spans[j][0])
            j += 1
        flags.append(covered * 2 > stop - start)
    return flags


def window_spans(spans: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """`spans` cut to the window [start, end), sorted, adjacent ones joined."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        lo, hi = max(lo, start), min(hi, end)
        if lo >= hi:
            continue
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def read_whole(read: Callable[[int, int], LogPiece], offset: int, length: int) -> LogPiece:
    """`read(offset, length)`, in as many calls as the server cuts it into (it stops a
    reply short before more stderr spans than it sends at once), up to the log's end."""
    got = read(offset, length)
    while got.data and len(got.data) < length and offset + len(got.data) < got.size:
        more = read(offset + len(got.data), length - len(got.data))
        if not more.data:
            break
        got = LogPiece(offset, got.data + more.data, more.size, got.stderr + more.stderr)
    return got


def nearest_match(search: Callable[[str, int, bool], LogMatches], term: str, origin: int,
                  backward: bool, calls: int) -> int | None:
    """Where `term` next occurs from `origin` to the log's end (start, `backward`), then
    once around from the other end; at most `calls` server calls each way."""
    wrap = MAX_ID if backward else 0
    for at in (origin, wrap) if origin != wrap else (origin,):
        next_at: int | None = at
        for _ in range(calls):
            if next_at is None:
                break
            page = search(term, next_at, backward)
            if page.offsets:
                return page.offsets[0]
            next_at = page.next
    return None


def status_line(size: int, at: int | None, *, following: bool, term: str,
                searching: bool) -> str:
    """A log view's status line: where it is (`at`: the top line's offset, None at the
    log's top), the log's size, the search, and whether it follows the end."""
    if following:
        where = "▼ FOLLOWING the end"
    elif at is None:
        where = "top of the log"
    else:
        where = f"byte {at:,} ({100 * at // max(1, size)}%)"
    parts = [f" {where} · {format_size(size)}"]
    if searching:
        parts.append(f"searching for {term!r}…")
    elif term:
        parts.append(f"/{term}  n/N: next/previous")
    if not following:
        parts.append("G: end and follow")
    return " · ".join(parts)


def error_line(tail: LogPiece) -> str | None:
    """The line of a failed job's log tail that says why (format.last_error_line),
    looked for among the lines it wrote to stderr first, when the server tells them."""
    cut = line_start(tail.data, tail.offset)
    lines, starts = split_lines(tail.data[cut:], tail.offset + cut)
    flags = from_stderr(starts, tail.offset + len(tail.data), list(tail.stderr))
    errors = [line for line, err in zip(lines, flags, strict=True) if err]
    return (last_error_line(errors) if errors else None) or last_error_line(lines)
