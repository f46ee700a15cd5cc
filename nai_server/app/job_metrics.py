"""Reading a job's metrics.jsonl in bounded pages. The file is the job's to write, so
each call reads a bounded amount (the client continues from `next`), lines longer than
MAX_METRICS_LINE are skipped unread, and where recent calls stopped is remembered so
that following a growing file reads only what is new."""

from __future__ import annotations

import os
from typing import Any

from nai_server.core.bounds import json_row
from nai_server.protocol import MetricsPage

MAX_METRICS_ROWS = 10_000  # rows per metrics call
MAX_METRICS_LINE = 1 << 16  # longer lines are skipped, not read into memory
MAX_METRICS_SCAN = 16 << 20  # bytes one metrics call reads past `since`, at most
MARKS_PER_JOB = 32
MAX_MARKED_JOBS = 4096


class MetricsReads:
    """Where recent metrics reads of each job stopped: job id → {line: byte offset}."""

    def __init__(self) -> None:
        self.marks: dict[int, dict[int, int]] = {}

    def page(self, job_id: int, fd: int, since: int) -> MetricsPage:
        """Rows after line `since` of the open file `fd`, read from the nearest mark
        at or before it."""
        marks = self.marks.setdefault(job_id, {})
        size = os.fstat(fd).st_size
        line = max((n for n, at in marks.items() if n <= since and at <= size), default=0)
        scan = MetricsScan(since, line)
        scan.feed(fd, marks.get(line, 0), size)
        marks[scan.line] = scan.offset
        while len(marks) > MARKS_PER_JOB:
            del marks[next(iter(marks))]
        while len(self.marks) > MAX_MARKED_JOBS:
            del self.marks[next(iter(self.marks))]
        return MetricsPage(metrics=scan.rows, next=max(scan.line, since), skipped=scan.skipped)


class MetricsScan:
    """Reads complete lines of a metrics file from a known (line, offset), keeping the
    rows after line `since`, within the per-call bounds."""

    def __init__(self, since: int, line: int) -> None:
        self.since, self.line, self.offset = since, line, 0
        self.rows: list[dict[str, Any]] = []
        self.skipped = 0

    def feed(self, fd: int, offset: int, size: int) -> None:
        """Scan from `offset` (a line's start): lines up to `since` are counted, then
        at most MAX_METRICS_SCAN bytes are read; `offset` ends after the last complete
        line consumed."""
        self.offset = pos = offset
        budget = MAX_METRICS_SCAN
        pending = bytearray()  # the start of a line not yet ended
        overlong = False  # the current line is too long to keep: skipped unread
        while pos < size and budget > 0 and len(self.rows) < MAX_METRICS_ROWS:
            chunk = os.pread(fd, min(1 << 20, size - pos, budget), pos)
            if not chunk:
                break
            if self.line >= self.since:
                budget -= len(chunk)
            start = 0
            while len(self.rows) < MAX_METRICS_ROWS:
                nl = chunk.find(b"\n", start)
                if nl < 0:
                    break
                self._line(None if overlong else bytes(pending) + chunk[start:nl])
                pending.clear()
                overlong = False
                start = nl + 1
                self.offset = pos + start
            if not overlong:
                pending += chunk[start:]
                if len(pending) > MAX_METRICS_LINE:
                    pending.clear()
                    overlong = True
            pos += len(chunk)

    def _line(self, raw: bytes | None) -> None:
        self.line += 1
        if self.line <= self.since:
            return
        if raw is None:
            self.skipped += 1
            return
        row = json_row(raw)
        if row is not None:
            self.rows.append(row)
        elif raw.strip():
            self.skipped += 1
