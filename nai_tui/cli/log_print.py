"""`nai logs`: a job's log printed as `docker logs` prints a container's, what the job
wrote to stderr on our stderr and the rest on our stdout (so `nai logs 7 2>/dev/null`
shows its stdout alone), each piece flushed as it comes.

The log is read by byte ranges, each with the spans of it that came from stderr
(`ServerClient.log_piece`); a server too old for ranges is read as one stream, all on
stdout.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import BinaryIO

from nai_server.protocol import MAX_LOG_RANGE, TERMINAL_STATES, JobInfo, NotFound
from nai_server.protocol.jobs import LogPiece
from nai_tui.remote.client import ServerClient


def waiting_note(job: JobInfo) -> None:
    """On stderr: the job has not started, so its log is empty (not lost)."""
    why = f"{job.state}: {job.reason}" if job.reason else job.state
    print(f"job {job.id} has not started yet ({why}); use --follow to wait for its output",
          file=sys.stderr, flush=True)

# How often a followed job is asked again: soon after it printed (or started), then
# less often the longer it stays quiet, up to FOLLOW_POLL_SECONDS. A short job's end,
# and a line after a pause, show within tens of milliseconds, and a quiet job costs
# five requests a second.
FOLLOW_POLL_SECONDS = 0.2
FOLLOW_FIRST_POLL = 0.01


@dataclass
class LogEnd:
    """Where a printed log left off: its last byte and whether that went to stderr, so
    that a status line printed after it can start a line of its own."""

    last: bytes = b"\n"
    on_stderr: bool = False

    def saw(self, data: bytes, on_stderr: bool) -> None:
        if data:
            self.last, self.on_stderr = data[-1:], on_stderr

    def needs_newline(self) -> bool:
        """True when a line written to stderr now would be glued to the log's last,
        unfinished line: it ended on stderr, or stdout and stderr are the same file (a
        terminal, `2>&1`). With stdout elsewhere (`> train.log`) the log is left as the
        job wrote it."""
        if self.last == b"\n":
            return False
        if self.on_stderr:
            return True
        try:
            return os.path.samestat(os.fstat(sys.stdout.fileno()),
                                    os.fstat(sys.stderr.fileno()))
        except (OSError, ValueError):
            return True


def write_piece(piece: LogPiece, out: BinaryIO, err: BinaryIO,
                end: LogEnd | None = None) -> None:
    """The piece's bytes, each part to `err` if it came from stderr, else to `out`,
    flushed part by part (a line printed is a line shown, in a pipe too)."""
    for data, from_stderr in piece.parts():
        stream = err if from_stderr else out
        stream.write(data)
        stream.flush()
        if end is not None:
            end.saw(data, from_stderr)


def print_log(client: ServerClient, job_id: int, offset: int = 0, *,
              fallback: bool = True, end: LogEnd | None = None) -> int:
    """The log from `offset` to its end as it is now; where that end is. From a server
    without ranges, with `fallback`, the whole log as one piece."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    try:
        while True:
            piece = client.log_piece(job_id, offset, MAX_LOG_RANGE)
            write_piece(piece, out, err, end)
            offset += len(piece.data)
            if not piece.data or offset >= piece.size:
                return offset
    except NotFound:
        if offset or not fallback:
            raise
        data = client.logs(job_id)  # a server without ranges (or no such job: raises)
        out.write(data)
        out.flush()
        if end is not None:
            end.saw(data, False)
        return len(data)


TAIL_CHUNK = 64 * 1024  # the first chunk read back from the end to find the last lines;
# each next one twice the last, up to MAX_LOG_RANGE: a few lines cost one small read and
# a large --tail on a huge log a few dozen calls, not one per 64 KiB.


def read_whole(client: ServerClient, job_id: int, offset: int, length: int) -> bytes:
    """Bytes `offset` to `offset + length` of the log, over as many calls as it takes: a
    reply may hold fewer bytes than asked (the server caps a call at MAX_LOG_RANGE, and
    stops it before its MAX_LOG_SPANS+1th stderr span). Shorter only where the log is."""
    parts: list[bytes] = []
    got = 0
    while got < length:
        data, _ = client.log_range(job_id, offset + got, length - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def tail_offset(client: ServerClient, job_id: int, lines: int) -> int:
    """Where the log's last `lines` lines begin, found by reading back from its end a
    chunk at a time: only those lines (and at most a chunk more) are read, however long
    the log. A last line without its newline counts as a line."""
    _, size = client.log_range(job_id, 0, 0)
    if lines <= 0:
        return size
    at, seen, chunk = size, 0, TAIL_CHUNK
    while at > 0:
        start = max(0, at - chunk)
        data = read_whole(client, job_id, start, at - start)
        if len(data) < at - start:
            return 0  # the log shrank under us: all of it rather than lines skipped
        stop = len(data)
        if at == size and data.endswith(b"\n"):
            stop -= 1  # the log's very last newline ends its last line, not one after it
        while (i := data.rfind(b"\n", 0, stop)) >= 0:
            seen += 1
            if seen == lines:
                return start + i + 1
            stop = i
        at = start
        chunk = min(chunk * 2, MAX_LOG_RANGE)
    return 0


def follow_log(client: ServerClient, job_id: int, end: LogEnd | None = None, *,
               offset: int = 0) -> JobInfo:
    """The log from `offset` as it is written, until the job ends; the job as it ended.
    `end`, when given, learns where the log printed left off."""
    sys.stdout.flush()  # text printed before goes out before the log's raw bytes
    wait = FOLLOW_FIRST_POLL
    while True:
        job = client.job(job_id)  # asked before reading: all written before its end is read
        try:
            read = print_log(client, job_id, offset, fallback=False, end=end)
        except NotFound:
            if offset:
                raise
            return _follow_stream(client, job_id, end)
        if job.state in TERMINAL_STATES:
            return job
        wait = FOLLOW_FIRST_POLL if read > offset else min(wait * 2, FOLLOW_POLL_SECONDS)
        offset = read
        time.sleep(wait)


def _follow_stream(client: ServerClient, job_id: int, end: LogEnd | None) -> JobInfo:
    """Following a server without ranges: its stream, all on stdout."""
    for chunk in client.follow_logs(job_id):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        if end is not None:
            end.saw(chunk, False)
    job = client.job(job_id)
    while job.state not in TERMINAL_STATES:  # the stream ended early (connection dropped)
        time.sleep(0.5)
        job = client.job(job_id)
    return job
