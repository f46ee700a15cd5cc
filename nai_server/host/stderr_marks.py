"""The daemon's side of telling a job's stderr from its stdout (host.stderr_tagger):
starting the tagger beside a job, and reading back where its stderr went in the log.

The marks file is the owner's to write, so it is read as job files are (jobfiles: no
link, FIFO or device is opened, a regular file only) and never in whole: a bisection
finds the first record that matters and a bounded block after it is read, so a marks
file of any size (a sparse one of terabytes) costs a few reads. What is read is
untrusted: core.log_marks clips, sorts and merges it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nai_server.core.log_marks import Span, clip_spans
from nai_server.host import jobfiles, output_helpers, stderr_tagger
from nai_server.host.output_helpers import AsRoot, Forked, ForkServer

log = logging.getLogger("nai.launch")

MARKS_FILE = "log.stderr"
RECORD = stderr_tagger.RECORD
MAX_SCAN = 4096  # records read after the bisection, at most, per answer
START_SECONDS = 3.0  # a tagger slower to start than this is killed, the job untagged
Tagger = subprocess.Popen[bytes] | Forked  # started on its own, or forked (output_forks)
_SOURCE: str | None = None
# The tagger's command line, as `ps` shows it; its program comes in its environment.
SOURCE_VARIABLE = "NAI_STDERR_TAGGER"
BOOT = (f"# nai: stderr tagger\nimport os\n"
        f"exec(compile(os.environ.pop({SOURCE_VARIABLE!r}), 'stderr_tagger', 'exec'))")


def _source() -> str:
    """The tagger's program, passed in its environment: nothing of the daemon's files
    need be readable by the job's owner (the daemon's may be root's alone)."""
    global _SOURCE
    if _SOURCE is None:
        _SOURCE = Path(stderr_tagger.__file__).read_text()
    return _SOURCE


@dataclass(frozen=True)
class Tagging:
    """A job's stderr pipe, ready to hand to its wrapper: the write end (its
    descriptor is 10 or more: see launchers.local.WRAPPER), the tagger at the other
    end, and the pipe on which the tagger says it has started."""

    pipe: int
    tagger: Tagger
    started: int

    def close(self) -> None:
        os.close(self.pipe)
        os.close(self.started)


def start_tagger(forks: ForkServer, pipe: int, log_fd: int, marks: int, started: int,
                 uid: int | None, gid: int | None, groups: tuple[int, ...]) -> Tagger | None:
    """The tagger, as the job's owner, in a session of its own (a daemon restart or a
    signal to the job's group leaves it reading), forked by the fork server (no Python
    starts; nothing the owner must be able to read), or started on its own if that
    server fails; None if neither works (the job's stderr then goes to the log untagged,
    as before). It closes `started` once it reads."""
    try:
        return forks.spawn_tagger(uid, gid, groups, (pipe, log_fd, marks, started))
    except (OSError, AsRoot) as exc:
        log.info("stderr tagger not forked (%s): started on its own", exc)
    argv = [sys.executable, "-I", "-S", "-c", BOOT, str(marks), str(started)]
    try:
        if uid is not None:  # never Popen(user=): see output_helpers.as_owner
            if gid is None:
                raise ValueError("no group to run the tagger with")
            argv = output_helpers.as_owner(argv, uid, gid, groups)
        return subprocess.Popen(
            argv, stdin=pipe, stdout=log_fd, stderr=subprocess.DEVNULL,
            pass_fds=(marks, started), cwd="/",
            env={**output_helpers.ENV, SOURCE_VARIABLE: _source()}, close_fds=True,
            start_new_session=True)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        log.warning("the stderr tagger did not start (%s): stderr goes to the log "
                    "untold from stdout", exc)
        return None


def ended_within(tagger: Tagger, seconds: float) -> bool:
    """Whether the tagger has exited, waiting for it up to `seconds` (it has once the
    job and all it left holding its stderr are gone, a moment after the job's end)."""
    if isinstance(tagger, Forked):
        if tagger.poll() is not None:
            return True
        ready = select.poll()
        ready.register(tagger.pidfd, select.POLLIN)
        return bool(ready.poll(seconds * 1000))
    try:
        tagger.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def has_started(tagging: Tagging, timeout: float = START_SECONDS) -> bool:
    """Whether the tagger said it reads, within `timeout` seconds; if not, it is killed
    (the job then runs with its stderr untagged)."""
    ready = select.poll()
    ready.register(tagging.started, select.POLLIN)
    if ready.poll(timeout * 1000):
        with contextlib.suppress(OSError):
            if os.read(tagging.started, 1) == b"\n":
                return True
    with contextlib.suppress(ProcessLookupError):
        tagging.tagger.kill()
    log.warning("the stderr tagger did not start in %ss: stderr goes to the log untold "
                "from stdout", timeout)
    return False


def read_spans(job_dir: Path, lo: int, hi: int, limit: int) -> tuple[list[Span], int | None]:
    """The stderr spans of the log within [lo, hi), at most `limit` (and where the first
    left out begins, as core.log_marks.clip_spans); none when the job kept no marks, or
    its marks file is not a regular file any more."""
    if hi <= lo:
        return [], None
    try:
        with jobfiles.open_regular(job_dir, MARKS_FILE) as fd:
            if fd is None:
                return [], None
            count = os.fstat(fd).st_size // RECORD.size
            first = _first_ending_after(fd, count, lo)
            want = min(count - first, MAX_SCAN)
            block = os.pread(fd, want * RECORD.size, first * RECORD.size) if want else b""
    except OSError:
        return [], None
    records = []
    for start, end in RECORD.iter_unpack(block[:len(block) // RECORD.size * RECORD.size]):
        if start >= hi and start < end:
            break  # in the order written: the rest lie beyond
        records.append((start, end))
    return clip_spans(records, lo, hi, limit)


def _first_ending_after(fd: int, count: int, lo: int) -> int:
    """The first record whose end is past `lo`, by bisection (records are written in
    the log's order; a file that is not makes a wrong answer, never a long one)."""
    low, high = 0, count
    while low < high:
        mid = (low + high) // 2
        raw = os.pread(fd, RECORD.size, mid * RECORD.size)
        if len(raw) < RECORD.size:
            return mid
        if RECORD.unpack(raw)[1] <= lo:
            low = mid + 1
        else:
            high = mid
    return low
