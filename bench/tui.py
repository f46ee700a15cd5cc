"""The TUI's two speed targets, against a real personal daemon holding 1,000 jobs.

1. Start-up: from launching `nai` (in tmux, a real terminal) to the jobs table painted
   with jobs on it, side by side with `python -c "import textual"` as the baseline.
2. One refresh of the jobs screen with 1,000 jobs and 8 GPUs (target < 50 ms): the
   handler that updates the table in place (every row's age changed), and the time
   until the screen has painted it; plus the poll itself (the API calls a worker makes
   off the UI thread).

    .venv/bin/python bench/tui.py [--jobs N] [--runs N]
    .venv/bin/python bench/tui.py --scale [--log-mb N]   (see bench/tui_scale.py)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
TARGET_MS = 50.0
ROW = re.compile(r"^\s*\d+\s+bench-\d+\s", re.M)


@contextmanager
def daemon(root: Path, gpus: int = 8) -> Iterator[Path]:
    sock = root / "s.sock"
    proc = subprocess.Popen(
        [str(BIN / "nai-server"), "run", "--personal", "--state-dir", str(root / "state"),
         "--socket", str(sock), "--fake-gpus", str(gpus)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)),
                                  base_url="http://nai") as c:
                    if c.get("/v1/version").status_code == 200:
                        break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the daemon did not start")
            time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        proc.wait(20)


def seed(sock: Path, n: int) -> None:
    """Drain the server (so nothing runs) and queue `n` jobs."""
    from nai_tui.remote.client import ServerClient
    from nai_tui.remote.transports import local_http_client

    with ServerClient(local_http_client(sock), "bench") as client:
        client.drain(True)
        for i in range(n):
            client.submit(spec={"name": f"bench-{i}", "command": "true", "gpus": i % 3},
                          code_tree=None)


def startup(sock: Path, root: Path, runs: int) -> tuple[list[float], list[float]]:
    """Seconds from launching `nai` to jobs on screen, and for `import textual`."""
    config = root / "config" / "nai" / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'default: here\nservers:\n  here: {{url: "local:{sock}"}}\n')
    tmux = ["tmux", "-S", str(root / "tmux.sock")]
    command = (f"env XDG_CONFIG_HOME={shlex.quote(str(root / 'config'))} TERM=xterm-256color "
               f"{shlex.quote(str(BIN / 'nai'))}")
    nai, base = [], []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([*tmux, "new-session", "-d", "-s", "b", "-x", "120", "-y", "36",
                        command], check=True)
        while True:
            screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", "b"],
                                    capture_output=True, text=True).stdout
            if ROW.search(screen):
                nai.append(time.perf_counter() - start)
                break
            if time.perf_counter() - start > 30:
                raise SystemExit(f"no jobs on screen after 30 s:\n{screen}")
            time.sleep(0.005)
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import textual"], check=True)
        base.append(time.perf_counter() - start)
    return nai, base


async def refresh(sock: Path, runs: int) -> tuple[float, float, float, int]:
    """(handler ms, to-paint ms, poll ms, rows) medians over `runs` refreshes."""
    from textual.screen import Screen

    from nai_tui.config import ClientConfig, ServerEntry
    from nai_tui.testing import ManualClock
    from nai_tui.tui.app import NaiApp
    from nai_tui.tui.ports import connect_entry
    from nai_tui.tui.queue import poll_queue
    from nai_tui.tui.screens.jobs import JobsScreen
    from nai_tui.tui.widgets.job_table import JobTable

    painted: list[float] = []
    original = Screen._compositor_refresh

    def spy(self: Screen[object]) -> None:
        original(self)
        painted.append(time.perf_counter())

    Screen._compositor_refresh = spy  # type: ignore[method-assign]
    clock = ManualClock(time.time())
    app = NaiApp(connect_entry, config=ClientConfig(Path("/nonexistent")),
                 server=ServerEntry("here", f"local:{sock}"), clock=clock,
                 poll_interval=3600)
    handler, to_paint, polls = [], [], []
    async with app.run_test(size=(160, 50)) as pilot:
        while not app.connected:
            await pilot.pause(0.05)
        client = app.api
        screen = app.screen
        for i in range(runs + 1):
            start = time.perf_counter()
            poll = poll_queue(client, ("all", "", ""), [])
            gpus = client.gpus()
            polls.append(time.perf_counter() - start)
            message = JobsScreen.Polled(poll, gpus)
            clock.advance(2)  # every row's age moves, as between two real polls
            start = time.perf_counter()
            screen.on_jobs_screen_polled(message)  # type: ignore[attr-defined]
            done = time.perf_counter()
            deadline = done + 5
            while not painted or painted[-1] < done:
                if time.perf_counter() > deadline:
                    raise SystemExit("the screen did not repaint")
                await asyncio.sleep(0)
            if i:  # the first fills the table: not a refresh
                handler.append(done - start)
                to_paint.append(painted[-1] - start)
        rows = screen.query_one(JobTable).row_count
    Screen._compositor_refresh = original  # type: ignore[method-assign]
    med = statistics.median
    return med(handler) * 1e3, med(to_paint) * 1e3, med(polls) * 1e3, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scale", action="store_true",
                        help="in process: 2,000 / 10,000 jobs and a 1 GB log against "
                             "baselines (bench/tui_scale.py)")
    parser.add_argument("--log-mb", type=int, default=1024)
    args = parser.parse_args()
    if args.scale:
        from tui_scale import run

        print("\n".join(asyncio.run(run(args.log_mb))))
        return
    if shutil.which("tmux") is None:
        raise SystemExit("bench/tui.py needs tmux")
    os.environ.setdefault("TERM", "xterm-256color")
    with tempfile.TemporaryDirectory() as tmp, daemon(Path(tmp)) as sock:
        seed(sock, args.jobs)
        nai, base = startup(sock, Path(tmp), args.runs)
        handler, paint, poll, rows = asyncio.run(refresh(sock, args.runs * 2))
    n, b = statistics.median(nai) * 1e3, statistics.median(base) * 1e3
    print(f"start-up, nai to jobs painted ({args.jobs} jobs): {n:7.1f} ms "
          f"(min {min(nai) * 1e3:.1f})")
    print(f"baseline, python -c 'import textual'    : {b:7.1f} ms "
          f"(min {min(base) * 1e3:.1f})")
    print(f"ratio nai start-up / import textual     : {n / b:7.2f}")
    print(f"refresh, {rows} rows + 8 GPUs, handler   : {handler:7.1f} ms "
          f"({handler / TARGET_MS:.2f} of the {TARGET_MS:.0f} ms target)")
    print(f"refresh, handler to screen painted      : {paint:7.1f} ms "
          f"({paint / TARGET_MS:.2f} of the target)")
    print(f"poll in the worker, jobs(1000) + gpus() : {poll:7.1f} ms (off the UI thread)")


if __name__ == "__main__":
    main()
