"""Metric points read from a job's log as it is written (`metrics:` in nai.yaml).

Each tick, the daemon reads what a running job with `metrics:` added to its log since
the last tick, turns the lines into points (core.metric_patterns) and appends them to
the job's metrics.jsonl, the file that `nai metrics`, the TUI's plots and
`register_model` read, as {"step", "time", name: value...} lines. When the job ends,
the rest of its log is read before it is finished (`finish`, on the thread that
collects its outputs, not the run loop's), so its last lines count too.

The log is the job's: it may be truncated, grow without a newline or be huge and
sparse. It is opened only through `jobfiles` (no link is followed, only a regular
file is read), at most READ_PER_TICK bytes a tick (READ_AT_END at the end), lines are
split at a newline or a carriage return (progress bars), and a line longer than
LINE_BYTES is matched on its start and the rest skipped. Where the reading stopped
is saved next to it in STATE_FILE (the daemon's own file), so a restarted daemon goes
on from there instead of adding the same points twice.

With `metrics: {tensorboard: DIR}`, the scalars of the TensorBoard event files under
code/DIR and output/DIR are read too, every TB_EVERY seconds and once more at the
end, by a helper (host.tb_read) that runs as the job's owner, as the outputs' reader
does: the daemon never parses those files itself. It goes on from the offsets saved
with the log's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nai_server.core.bounds import json_loads
from nai_server.core.job import Job
from nai_server.core.metric_patterns import MAX_LINE, Matcher, MatchState, clean_point
from nai_server.core.states import JobState
from nai_server.host import jobfiles, outputs, tb_read

log = logging.getLogger("nai.metrics")

Doc = dict[str, Any]
STATE_FILE = "metrics.ingest"
LOG_FILE = "log"
METRICS_FILE = "metrics.jsonl"
READ_PER_TICK = 256 << 10  # bytes of a running job's log read in one tick
READ_AT_END = 16 << 20  # bytes read from an ended job's log to catch up
LINE_BYTES = 4 * MAX_LINE  # bytes of one line kept; past that it is cut
MAX_POINTS = 5000  # points one job adds in one tick; the rest waits for the next
_SEPARATOR = re.compile(rb"[\r\n]")
METRICS_MAX = 256 << 20  # bytes of metrics.jsonl past which the daemon adds no points
TB_EVERY = 5.0  # seconds between two readings of a running job's event files
TB_TIMEOUT = 20.0  # a reading that takes longer is killed (and tried again later)
TB_MAX_OUTPUT = 16 << 20  # bytes of the helper's answer


@dataclass
class Cursor:
    """Where the reading of one job's log stands."""

    offset: int = 0  # the log's byte after the last line consumed
    skipping: bool = False  # inside an overlong line: drop bytes up to the next separator
    state: MatchState = field(default_factory=MatchState)
    tb: dict[str, int] = field(default_factory=dict)  # event file → offset read to

    def to_json(self) -> Doc:
        return {"offset": self.offset, "skipping": self.skipping, "tb": self.tb,
                **self.state.to_json()}

    @classmethod
    def from_json(cls, data: object) -> Cursor:
        if not isinstance(data, dict):
            return cls()
        offset = data.get("offset")
        tb = data.get("tb")
        return cls(offset=offset if isinstance(offset, int) and offset >= 0 else 0,
                   skipping=data.get("skipping") is True, state=MatchState.from_json(data),
                   tb=_offsets(tb))


def _offsets(data: object) -> dict[str, int]:
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in list(data.items())[:2 * tb_read.MAX_FILES]
            if isinstance(k, str) and len(k) < 1024 and isinstance(v, int) and v >= 0}


class MetricsIngest:
    """Reads the logs of running jobs that asked for metrics from their output."""

    def __init__(self, jobs_dir: Path, clock: Callable[[], float] = time.time,
                 run_as: Callable[[Job], outputs.RunAs] = lambda job: outputs.RunAs()) -> None:
        self.jobs_dir = jobs_dir
        self.clock = clock
        self.run_as = run_as  # the account a job's event files are read as
        self._cursors: dict[int, Cursor] = {}
        self._tb_pool = ThreadPoolExecutor(1, thread_name_prefix="nai-tensorboard")
        self._tb: dict[int, Future[Doc]] = {}  # readings under way
        self._tb_due: dict[int, float] = {}  # when each job's next reading may start
        self._finals: dict[int, Job] = {}  # ended jobs whose last reading is to be done

    def poll(self, jobs: Iterable[Job], ended: Iterable[int] = ()) -> None:
        """Take the new lines of each running job's log. Those in `ended` are handed
        over to `finish`, which reads them to the end off the run loop's thread. Jobs
        not given are forgotten (their saved cursor stays)."""
        last = set(ended)
        seen = set()
        for job in jobs:
            metrics = job.spec.metrics
            if not metrics or job.state not in (JobState.STARTING, JobState.RUNNING):
                continue
            job_id = job.id
            seen.add(job_id)
            if job_id in last:
                self._finals[job_id] = job
                continue
            try:
                self.ingest(job_id, Matcher(metrics))
            except Exception as exc:  # a job's odd log must not stop the daemon's tick
                log.warning("job %s: metrics not read from its log: %s", job_id, exc)
            try:
                if metrics.get("tensorboard"):
                    self.tensorboard(job)
            except Exception as exc:
                log.warning("job %s: TensorBoard scalars not read: %s", job_id, exc)
        for job_id in list(self._cursors):
            if job_id not in seen:
                self._forget(job_id)

    def finish(self, job_id: int) -> None:
        """Read the rest of an ended job's log and event files (handed over by `poll`),
        before its outputs are collected and a model is registered from it. Called on
        a collection thread: a long log or a slow reader never holds the run loop."""
        job = self._finals.pop(job_id, None)
        if job is None:
            return
        metrics = job.spec.metrics or {}
        try:
            self.ingest(job_id, Matcher(metrics), final=True)
        except Exception as exc:
            log.warning("job %s: metrics not read from its log: %s", job_id, exc)
        try:
            if metrics.get("tensorboard"):
                self.tensorboard(job, final=True)
        except Exception as exc:
            log.warning("job %s: TensorBoard scalars not read: %s", job_id, exc)
        self._forget(job_id)

    def _forget(self, job_id: int) -> None:
        self._cursors.pop(job_id, None)
        self._tb_due.pop(job_id, None)
        self._tb.pop(job_id, None)

    # --- TensorBoard ------------------------------------------------------------------

    def tensorboard(self, job: Job, *, final: bool = False) -> None:
        """Take the result of the job's last reading of its event files, and start the
        next when due; at the end, wait for it and read once more."""
        job_id = job.id
        job_dir = self.jobs_dir / str(job_id)
        cursor = self._cursors.get(job_id) or self._load(job_dir)
        self._cursors[job_id] = cursor
        running = self._tb.get(job_id)
        if running is not None:
            if not (running.done() or final):
                return
            del self._tb[job_id]
            self._apply(job_id, job_dir, cursor, running.result())
        if final:
            self._apply(job_id, job_dir, cursor, self.read_events(job, dict(cursor.tb)))
        elif time.monotonic() >= self._tb_due.get(job_id, 0.0):
            self._tb_due[job_id] = time.monotonic() + TB_EVERY
            self._tb[job_id] = self._tb_pool.submit(self.read_events, job, dict(cursor.tb))

    def read_events(self, job: Job, cursors: dict[str, int]) -> Doc:
        """Run the reader as the job's owner; its answer ({"error"} if it failed)."""
        job_dir = self.jobs_dir / str(job.id)
        where = (job.spec.metrics or {})["tensorboard"]
        try:
            run_as = self.run_as(job)
        except Exception as exc:  # no account to read them as (unix.NoAccount)
            return {"error": str(exc)}
        argv = [sys.executable, "-I", tb_read.__file__,
                str(job_dir / "code" / where), str(job_dir / "output" / where)]
        try:
            proc = subprocess.Popen(
                outputs.owner_argv(argv, run_as), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd="/", close_fds=True,
                start_new_session=True, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        except (OSError, ValueError) as exc:
            return {"error": f"the event file reader did not start: {exc}"}
        # The helper runs as the job's owner, who could make it say anything: its
        # answer is read with a bound and a deadline, and checked like any input.
        late = threading.Timer(TB_TIMEOUT, outputs.kill, (proc,))
        late.start()
        try:
            assert proc.stdin is not None and proc.stdout is not None
            with contextlib.suppress(OSError):
                proc.stdin.write(json.dumps(cursors).encode())
                proc.stdin.close()
            # To a deadline, not to the pipe's end: see outputs.DeadlineStream.
            out = outputs.DeadlineStream(proc.stdout.fileno(),
                                         time.monotonic() + TB_TIMEOUT).read(TB_MAX_OUTPUT)
        finally:
            late.cancel()
            outputs.kill(proc)
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        try:
            answer = json_loads(out)
        except ValueError:
            return {"error": "the event file reader answered nonsense (or took over "
                             f"{TB_TIMEOUT:g} s)"}
        return answer if isinstance(answer, dict) else {"error": "no answer"}

    def _apply(self, job_id: int, job_dir: Path, cursor: Cursor, answer: Doc) -> None:
        if answer.get("error"):
            log.warning("job %s: TensorBoard scalars not read: %s", job_id,
                        str(answer["error"])[:200])
            return
        raw = answer.get("points")
        # The helper runs as the job's owner, who may make it answer anything: no more
        # points than it may read in one run, and offsets only for the files it lists
        # now (every file it found), so a job renaming its files cannot grow the state.
        points = [p for p in map(clean_point, raw[:tb_read.MAX_POINTS]
                                 if isinstance(raw, list) else []) if p is not None]
        if points:
            data = b"".join(json.dumps(p).encode() + b"\n" for p in points)
            if not jobfiles.append(job_dir, METRICS_FILE, data, METRICS_MAX):
                log.warning("job %s: TensorBoard points not added: no metrics.jsonl, or it "
                            "is over %d MiB", job_id, METRICS_MAX >> 20)
        now = dict(list(_offsets(answer.get("cursors")).items())[:tb_read.MAX_FILES])
        cursor.tb = now
        self._save(job_dir, cursor)

    def ingest(self, job_id: int, matcher: Matcher, *, final: bool = False) -> int:
        """Read the job's new log lines into points; how many points were added."""
        if not matcher:
            return 0
        job_dir = self.jobs_dir / str(job_id)
        cursor = self._cursors.get(job_id) or self._load(job_dir)
        self._cursors[job_id] = cursor
        budget = READ_AT_END if final else READ_PER_TICK
        added = 0
        while budget > 0:
            lines, used = self._read(job_dir, cursor, min(budget, READ_PER_TICK), final)
            if not lines and not used:
                break
            budget -= max(used, 1)
            points = matcher.points((text for text, _ in lines), cursor.state)
            if points:
                now = round(self.clock(), 3)
                data = b"".join(json.dumps({"step": p["step"], "time": now, **p}).encode()
                                + b"\n" for p in points)
                if not jobfiles.append(job_dir, METRICS_FILE, data, METRICS_MAX):
                    log.warning("job %s: log metrics not added: no metrics.jsonl, or it "
                                "is over %d MiB", job_id, METRICS_MAX >> 20)
                added += len(points)
            if used:
                self._save(job_dir, cursor)
            if not final or added >= MAX_POINTS * 16:
                break
        return added

    def _read(self, job_dir: Path, cursor: Cursor, limit: int,
              final: bool) -> tuple[list[tuple[str, int]], int]:
        """The complete lines after the cursor (text, end offset), up to `limit` bytes
        and MAX_POINTS lines; the cursor moves past them. Also the bytes consumed."""
        with jobfiles.open_regular(job_dir, LOG_FILE) as fd:
            if fd is None:
                return [], 0
            size = os.fstat(fd).st_size
            if size < cursor.offset:  # the job truncated its log: start again
                cursor.offset, cursor.skipping = 0, False
            data = os.pread(fd, min(limit, size - cursor.offset), cursor.offset)
        lines: list[tuple[str, int]] = []
        start = 0
        for sep in _SEPARATOR.finditer(data):
            end = sep.start()
            if cursor.skipping:
                cursor.skipping = False
            elif end > start:
                lines.append((data[start:min(end, start + LINE_BYTES)]
                              .decode("utf-8", "replace"), cursor.offset + sep.end()))
            start = sep.end()
            if len(lines) >= MAX_POINTS:
                break
        rest = data[start:]
        if len(lines) < MAX_POINTS and (len(rest) > LINE_BYTES or (final and rest
                                                                   and len(data) < limit)):
            # An overlong line (or an ended job's last, unfinished one): its start counts.
            if not cursor.skipping:
                lines.append((rest[:LINE_BYTES].decode("utf-8", "replace"),
                              cursor.offset + len(data)))
            cursor.skipping = not (final and len(data) < limit)
            start = len(data)
        consumed = start
        cursor.offset += consumed
        return lines, consumed

    def _load(self, job_dir: Path) -> Cursor:
        raw = jobfiles.read_small(job_dir, STATE_FILE, 1 << 16)
        if not raw:
            return Cursor()
        try:
            return Cursor.from_json(json.loads(raw))
        except ValueError:
            return Cursor()

    @staticmethod
    def _save(job_dir: Path, cursor: Cursor) -> None:
        """The cursor, replaced whole (the directory is the daemon's)."""
        temp = job_dir / f".{STATE_FILE}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(cursor.to_json()).encode())
        finally:
            os.close(fd)
        os.replace(temp, job_dir / STATE_FILE)

