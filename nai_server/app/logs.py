"""Log ranges and search: what a pager over a job's log of any length asks for, with
which bytes of a range came from the job's stderr (host.stderr_marks).

The log is the job's to write: each call reads a bounded amount through the same safe
opening as the log route (a FIFO, a link or a device is refused, never followed), and
search is plain text, linear in what it reads, so no term a user types can make it slow.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from nai_server.app.accounts import Caller
from nai_server.app.jobs import Jobs
from nai_server.host import jobfiles, stderr_marks
from nai_server.protocol import (
    MAX_LOG_MATCHES,
    MAX_LOG_PATTERN,
    MAX_LOG_RANGE,
    Conflict,
    Invalid,
    LogMatches,
)
from nai_server.protocol.jobs import MAX_LOG_SPANS, LogPiece

LOG_SEARCH_CHUNK = 1 << 20
LOG_SEARCH_SCAN = 64 << 20  # bytes one search call reads, at most (`next` continues)


def _open_log(jobs: Jobs, caller: Caller,
              job_id: int) -> tuple[Path, contextlib.AbstractContextManager[int | None]]:
    """The log's directory (the caller checked as a reader) and its safe opening."""
    job_dir = jobs.log_dir(caller, job_id)
    return job_dir, jobfiles.open_regular(job_dir, "log")


def log_range(jobs: Jobs, caller: Caller, job_id: int, offset: int,
              length: int) -> tuple[bytes, int]:
    """Up to `length` (at most MAX_LOG_RANGE) bytes of the job's log from `offset`, and
    the log's size: what a pager needs to show any part of a log of any length."""
    piece = log_piece(jobs, caller, job_id, offset, length)
    return piece.data, piece.size


def log_piece(jobs: Jobs, caller: Caller, job_id: int, offset: int,
              length: int) -> LogPiece:
    """As log_range, with the spans of those bytes that came from the job's stderr (at
    most MAX_LOG_SPANS: the bytes returned stop where the first left out begins)."""
    if offset < 0 or length < 0:
        raise Invalid("offset and length are byte counts: 0 or more")
    length = min(length, MAX_LOG_RANGE)
    job_dir, opening = _open_log(jobs, caller, job_id)
    try:
        with opening as fd:
            if fd is None:
                return LogPiece(offset, b"", 0)
            size = os.fstat(fd).st_size
            data = os.pread(fd, min(length, max(0, size - offset)), offset) if length else b""
    except jobfiles.UnsafeJobFile as exc:
        raise Conflict(f"job {job_id}'s log is not a regular file any more; ask an admin "
                       f"to look at {job_dir}") from exc
    spans, cut = stderr_marks.read_spans(job_dir, offset, offset + len(data), MAX_LOG_SPANS)
    if cut is not None:
        data = data[:cut - offset]
    return LogPiece(offset, data, size, tuple(spans))


def log_search(jobs: Jobs, caller: Caller, job_id: int, pattern: str, offset: int = 0, *,
               backward: bool = False, limit: int = 100) -> LogMatches:
    """Offsets where `pattern` occurs (plain text, ASCII case ignored) at or after
    `offset`, or before it when `backward`, nearest first. Linear in what it reads:
    no expression a user types can make it slow, and a call reads at most
    LOG_SEARCH_SCAN bytes (`next` says where to go on)."""
    needle = pattern.encode("utf-8", "replace").lower()
    if not needle or len(pattern) > MAX_LOG_PATTERN:
        raise Invalid(f"the search term must be 1 to {MAX_LOG_PATTERN} characters")
    if offset < 0:
        raise Invalid("offset is a byte count: 0 or more")
    limit = max(1, min(limit, MAX_LOG_MATCHES))
    job_dir, opening = _open_log(jobs, caller, job_id)
    try:
        with opening as fd:
            if fd is None:
                return LogMatches(offsets=[], next=None, size=0)
            size = os.fstat(fd).st_size
            scan = _scan_back if backward else _scan_forward
            offsets, nxt = scan(fd, needle, min(offset, size), size, limit)
            return LogMatches(offsets=offsets, next=nxt, size=size)
    except jobfiles.UnsafeJobFile as exc:
        raise Conflict(f"job {job_id}'s log is not a regular file any more; ask an admin "
                       f"to look at {job_dir}") from exc


def _find_all(chunk: bytes, needle: bytes, backward: bool = False) -> Iterator[int]:
    """Where `needle` starts in `chunk` (overlapping matches too), first to last or
    last to first; lazily, so a caller that has enough stops the scan."""
    if backward:
        at = chunk.rfind(needle)
        while at >= 0:
            yield at
            at = chunk.rfind(needle, 0, at + len(needle) - 1) if at else -1
    else:
        at = chunk.find(needle)
        while at >= 0:
            yield at
            at = chunk.find(needle, at + 1)


def _scan_forward(fd: int, needle: bytes, offset: int, size: int,
                  limit: int) -> tuple[list[int], int | None]:
    """Matches starting at or after `offset`; chunks overlap by len(needle) - 1 so a
    match across a chunk's edge is found once."""
    found: list[int] = []
    pos, budget, overlap = offset, LOG_SEARCH_SCAN, len(needle) - 1
    while pos < size and budget > 0:
        want = min(LOG_SEARCH_CHUNK, size - pos)
        chunk = os.pread(fd, want + overlap, pos).lower()
        if not chunk:
            break
        budget -= len(chunk)
        for at in _find_all(chunk, needle):  # each starts before `want`: the overlap is short
            found.append(pos + at)
            if len(found) == limit:
                return found, pos + at + 1
        pos += want
    return found, (pos if pos < size else None)


def _scan_back(fd: int, needle: bytes, offset: int, size: int,
               limit: int) -> tuple[list[int], int | None]:
    """Matches starting before `offset`, nearest first."""
    found: list[int] = []
    end, budget, overlap = offset, LOG_SEARCH_SCAN, len(needle) - 1
    while end > 0 and budget > 0:
        start = max(0, end - LOG_SEARCH_CHUNK)
        chunk = os.pread(fd, min(end - start + overlap, size - start), start).lower()
        if not chunk:
            break
        budget -= len(chunk)
        for at in _find_all(chunk, needle, backward=True):
            if start + at < end:
                found.append(start + at)
                if len(found) == limit:
                    return found, start + at
        end = start
    return found, (end if end > 0 else None)
