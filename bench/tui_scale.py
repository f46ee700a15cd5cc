"""The TUI at scale, in process on the in-memory fake server (so the figures are the
TUI's, not the link's), each against a baseline measured in the same run:

1. first paint of the jobs screen with 2,000 jobs, against an empty queue;
2. key-to-repaint p95 (the cursor moving, `j`, to the frame that shows it) with
   10,000 jobs, against 10 jobs;
3. opening a 1 GB log at its end, against a 1 MB log;
4. searching, from the end, for a string near the log's start (the search wraps),
   against the same in the 1 MB log.

The logs are real files read with the server's own range and search code
(`nai_server.app.logs`), so 3 and 4 include what the daemon does per call.

    .venv/bin/python bench/tui.py --scale [--log-mb 1024]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nai_server.app.logs import _scan_back, _scan_forward
from nai_server.protocol import MAX_LOG_RANGE, LogMatches
from nai_tui.config import ClientConfig, ServerEntry
from nai_tui.testing import FakeServerClient, ManualClock
from nai_tui.testing_demo import FakeTransfers
from nai_tui.tui.app import NaiApp
from nai_tui.tui.ports import reconnects
from nai_tui.tui.widgets.job_table import JobTable
from nai_tui.tui.widgets.log_view import LogView

NOW = 1_700_000_000.0
NEEDLE = "needle-near-the-start"
LAST = "the-very-last-line"


class FileLogs(FakeServerClient):
    """The fake server, with job logs read from files as the daemon reads them."""

    def __init__(self) -> None:
        super().__init__("lab", gpus=8)
        self.files: dict[int, Path] = {}

    def log_range(self, job_id: int, offset: int, length: int) -> tuple[bytes, int]:
        fd = os.open(self.files[job_id], os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            length = min(length, MAX_LOG_RANGE, max(0, size - offset))
            return os.pread(fd, length, offset), size
        finally:
            os.close(fd)

    def log_search(self, job_id: int, text: str, offset: int = 0, *, backward: bool = False,
                   limit: int = 100) -> LogMatches:
        fd = os.open(self.files[job_id], os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            scan = _scan_back if backward else _scan_forward
            found, nxt = scan(fd, text.encode().lower(), min(offset, size), size, limit)
            return LogMatches(offsets=found, next=nxt, size=size)
        finally:
            os.close(fd)


def make_app(fake: FakeServerClient, root: Path) -> NaiApp:
    config = ClientConfig(root / "config.yaml", {"lab": ServerEntry("lab", "gpubox")}, "lab")
    config.save()
    return NaiApp(lambda entry: fake, config=config, server=config.servers["lab"],
                  clock=ManualClock(NOW), transfers=FakeTransfers(), downloads=root / "out",
                  poll_interval=3600.0, backoff=reconnects(first=600.0, cap=3600.0))


def with_jobs(n: int) -> FileLogs:
    fake = FileLogs()
    for i in range(n):
        state = "running" if i < 8 else "queued" if i % 3 else "succeeded"
        fake.add_job(f"bench-{i}", user=("alice", "bob", "carol")[i % 3], state=state,
                     gpus=[i] if i < 8 else None, submitted_at=NOW - 10 * i,
                     started_at=NOW - 5 * i if state != "queued" else None,
                     ended_at=NOW if state == "succeeded" else None)
    return fake


async def until(pilot: Any, done: Callable[[], bool], limit: float = 120.0) -> float:
    """Seconds until `done()` holds, pausing the app between checks."""
    start = time.perf_counter()
    while not done():
        if time.perf_counter() - start > limit:
            raise SystemExit("the bench waited too long")
        await pilot.pause()
    return time.perf_counter() - start


async def first_paint(n: int, root: Path) -> float:
    """Seconds from starting the app to the first frame drawn with the jobs in it (the
    compositor's refresh after the table has them, as bench/tui.py's refresh times
    it), not to Pilot's next idle: Pilot waits for the CPU to go idle, which on a busy
    machine adds its load to the figure."""
    from textual.screen import Screen

    fake = with_jobs(n)
    app = make_app(fake, root)
    painted: list[float] = []
    original = Screen._compositor_refresh

    def spy(self: Screen[object]) -> None:
        original(self)
        if not painted and getattr(self, "loaded_for", None) is not None and \
                self.query_one(JobTable).row_count >= min(n, 100):
            painted.append(time.perf_counter())

    Screen._compositor_refresh = spy  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: bool(painted))
            return painted[0] - start
    finally:
        Screen._compositor_refresh = original  # type: ignore[method-assign]


async def key_p95(n: int, root: Path, presses: int = 150) -> float:
    """p95 of the time from a key press (`j`/`k`) to the first frame drawn with the
    cursor on its new row (the compositor's refresh, as first_paint times it), not to
    Pilot's next idle, which adds the machine's load to the figure."""
    from textual.screen import Screen

    app = make_app(with_jobs(n), root)
    frames: list[tuple[float, int]] = []
    original = Screen._compositor_refresh

    def spy(self: Screen[object]) -> None:
        original(self)
        tables = self.query(JobTable)
        if tables:
            frames.append((time.perf_counter(), tables.first().cursor_row))

    Screen._compositor_refresh = spy  # type: ignore[method-assign]
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(JobTable)
            await until(pilot, lambda: table.row_count >= min(n, 100))
            times = []
            for i in range(presses):
                down = i % 8 < 4  # up and down within the first five rows: even 10 jobs have them
                want = table.cursor_row + (1 if down else -1)
                frames.clear()
                start = time.perf_counter()
                await pilot.press("j" if down else "k")
                await until(pilot, lambda want=want: any(row == want for _, row in frames))
                times.append(next(t for t, row in frames if row == want) - start)
            return statistics.quantiles(times, n=20)[-1]
    finally:
        Screen._compositor_refresh = original  # type: ignore[method-assign]


def write_log(path: Path, size: int) -> None:
    line = b"step 000123  loss 0.123456  acc 0.987654  lr 3e-4  some padding text\n"
    block = line * (1 << 20 // len(line) + 1)
    with open(path, "wb") as out:
        out.write(b"starting\n" + NEEDLE.encode() + b"\n")
        written = 0
        while written < size:
            out.write(block)
            written += len(block)
        out.write(LAST.encode() + b"\n")


async def open_and_search(log_bytes: int, root: Path) -> tuple[float, float]:
    fake = with_jobs(1)
    job = fake.add_job("big-log", state="succeeded", started_at=NOW - 60, ended_at=NOW,
                       exit_code=0)
    path = root / f"log-{log_bytes}"
    write_log(path, log_bytes)
    fake.files[job.id] = path
    app = make_app(fake, root)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.screen.query_one(JobTable).row_count == 2)
        app.screen.query_one(JobTable).select_job(job.id)
        start = time.perf_counter()
        await pilot.press("enter")
        await until(pilot, lambda: _shows(app, LAST))
        opened = time.perf_counter() - start
        await pilot.press("slash")
        for key in NEEDLE:
            await pilot.press(key)
        start = time.perf_counter()
        await pilot.press("enter")
        await until(pilot, lambda: app.screen.query_one(LogView).match_offset is not None)
        return opened, time.perf_counter() - start


def _shows(app: NaiApp, text: str) -> bool:
    views = app.screen.query(LogView)
    if not views:
        return False
    view = views.first()
    lines = view.render_lines(view.region.reset_offset)
    return any(text in strip.text for strip in lines)


async def run(log_mb: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        await first_paint(0, root)  # warm-up: imports, CSS, the first app's set-up
        paint0, paint = await first_paint(0, root), await first_paint(2000, root)
        key0, key = await key_p95(10, root), await key_p95(10_000, root)
        open0, search0 = await open_and_search(1 << 20, root)
        open1, search1 = await open_and_search(log_mb << 20, root)
    ms = 1e3
    return [
        f"first paint, 2,000 jobs      : {paint * ms:8.1f} ms  vs empty queue "
        f"{paint0 * ms:7.1f} ms  ratio {paint / paint0:5.2f}",
        f"key-to-repaint p95, 10k jobs : {key * ms:8.1f} ms  vs 10 jobs     "
        f"{key0 * ms:7.1f} ms  ratio {key / key0:5.2f}",
        f"open a {log_mb} MB log at its end: {open1 * ms:8.1f} ms  vs 1 MB log    "
        f"{open0 * ms:7.1f} ms  ratio {open1 / open0:5.2f}",
        f"search near the start, wraps : {search1 * ms:8.1f} ms  vs 1 MB log    "
        f"{search0 * ms:7.1f} ms  ratio {search1 / search0:5.2f}",
    ]
