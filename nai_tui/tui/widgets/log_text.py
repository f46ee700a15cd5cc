"""A log's bytes as a terminal would have shown them: lines split where they begin
(byte offsets into the whole log), a progress bar redrawn with `\\r` left as its last
state, colour escapes and other control characters removed. Plain functions."""

from __future__ import annotations

import re

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


def split_lines(raw: bytes, start: int) -> tuple[list[str], list[int]]:
    """The lines of `raw` (which begins at byte `start` of the log) and where each
    begins; a last line not ended by a newline is kept, an empty one is not."""
    parts = raw.split(b"\n")
    if parts and not parts[-1]:
        parts.pop()
    lines, starts, at = [], [], start
    for part in parts:
        lines.append(clean_line(part))
        starts.append(at)
        at += len(part) + 1
    return lines, starts


def line_start(data: bytes, offset: int) -> int:
    """Where the first whole line of `data` (read from `offset`) begins in it."""
    if offset == 0:
        return 0
    newline = data.find(b"\n")
    return 0 if newline < 0 else newline + 1
