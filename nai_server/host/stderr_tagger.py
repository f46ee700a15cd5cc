"""The stderr tagger: copies a job's stderr into its log and records where it went.

The daemon starts it, as the job's owner and in the job's cgroup, as `python -I -S -c`
with a line that runs this file's source, passed in its environment (no file of the
daemon's need be readable by the owner), and these descriptors:

    0  the read end of the pipe that is the job's stderr
    1  the job's log, opened apart from the job's stdout (an open file description of
       its own, O_APPEND)
    M  (its first argument) the marks file `log.stderr`, O_APPEND
    N  (its second) a pipe to the daemon, told "\n" and closed once the tagger reads:
       the daemon starts the job only then (its first lines are not held back behind
       the tagger's start), or untagged if that never comes. A tagger forked by
       output_forks is told so there, before it becomes the owner: the owner may stop
       their own processes, and the daemon's wait for this word must not be theirs
    2  /dev/null: nothing the tagger could say goes into the marks

Each chunk read from the pipe is appended to the log. On an O_APPEND descriptor of its
own, the offset after a write is exactly the end of what that write added, even while
the job appends its stdout through its own descriptor at the same moment, so
(end - written, end) is the chunk's true place in the log. It is written to the marks
file right after, as RECORD: two little-endian u64, start and end, in the order written
(a reader merges the ones that touch), so the log's bytes go unmarked for no longer
than the tagger takes from one write to the next.

It exits when nobody holds the pipe's write end any more (the job and all it started
have ended, or were killed with the job's cgroup). It never stops reading while it
runs: a write that fails (a full disk) drops the chunk, so the job never blocks on its
stderr because of the tagger; a job whose tagger was killed (by its owner: it is
theirs) gets EPIPE or SIGPIPE on stderr. Standard library only, nothing of the daemon.
"""

from __future__ import annotations

import os
import signal
import struct
import sys

RECORD = struct.Struct("<QQ")
CHUNK = 1 << 20


NAME = "nai-stderr-tag"  # the process's name, as top, ps -o comm and pgrep show it


def run(pipe: int, log: int, marks: int, started: int = -1) -> int:
    # A cancel, a time-out or a preemption signals the whole job (its cgroup): the job
    # may then print to stderr as it stops ("Terminated", a traceback, the trap's own
    # words), so the tagger reads on till the pipe's end; only a kill stops it.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(NAME)
    except OSError:
        pass
    if started >= 0:
        try:
            os.write(started, b"\n")
        except OSError:
            pass  # the daemon gave up on this tagger: it reads all the same, till EOF
        os.close(started)
    while True:
        try:
            data = os.read(pipe, CHUNK)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:
            return 0
        merged: list[list[int]] = []
        for start, end in _append(log, data):  # one write each, merged where they touch
            if merged and merged[-1][1] == start:
                merged[-1][1] = end
            else:
                merged.append([start, end])
        if merged:
            try:
                os.write(marks, b"".join(RECORD.pack(*place) for place in merged))
            except OSError:
                pass  # a full disk: the bytes are in the log, unmarked


def _append(log: int, data: bytes) -> list[tuple[int, int]]:
    """Append `data` to the log; the places its writes landed (one write each)."""
    places = []
    view = memoryview(data)
    while view:
        try:
            done = os.write(log, view)
            end = os.lseek(log, 0, os.SEEK_CUR)
        except OSError:
            break  # a full disk: the rest of the chunk is dropped, reading goes on
        if done <= 0:
            break
        places.append((end - done, end))
        view = view[done:]
    return places


if __name__ == "__main__":
    raise SystemExit(run(0, 1, int(sys.argv[1]), int(sys.argv[2])))
