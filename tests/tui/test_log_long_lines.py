"""Scrolling back over lines longer than what the log view reads at once (a progress
bar redrawn with `\\r` for a whole epoch, a job that never writes a newline): each
such line shows in pieces, each piece as a terminal would have left it, and `k` or
PgUp always gets further back, up to the log's first line."""

from __future__ import annotations

import re

from tui_kit import SIZE, settle

from nai_tui.testing import FakeServerClient
from nai_tui.tui.widgets.job_table import JobTable
from nai_tui.tui.widgets.log_view import CHUNK, MAX_WINDOW, LogView

STATE = re.compile(r"Epoch 1: +\d+%\|[#.]{20}\| \d+/5000 \[\d\d:\d\d\]")


def tqdm_bar(updates: int = 5000) -> str:
    """A bar redrawn with `\\r` after every step, ended by one newline (~420 KB)."""
    out = []
    for i in range(1, updates + 1):
        done = 20 * i // updates
        out.append(f"\rEpoch 1: {100 * i // updates:3d}%|{'#' * done}{'.' * (20 - done)}|"
                   f" {i}/{updates} [{i // 60:02d}:{i % 60:02d}]")
    return "".join(out) + "\n"


async def scroll_to_top(pilot, log: LogView, presses: int = 80) -> list[str]:
    """Press PgUp until the status line says the top is reached; every row seen, in
    the log's order."""
    seen: dict[int, str] = {}
    for _ in range(presses):
        for i in range(log.top, min(len(log.lines), log.top + log.rows)):
            seen[log.starts[i]] = log.lines[i]
        assert len(log.raw) <= MAX_WINDOW + (log.rows + 2) * CHUNK  # never a whole line
        if "top of the log" in log.status():
            return [seen[at] for at in sorted(seen)]
        await pilot.press("pageup")
        await settle(pilot)
    raise AssertionError(f"PgUp stopped at {log.status()!r}")


async def open_log(pilot, job_id: int) -> LogView:
    await settle(pilot)
    pilot.app.screen.query_one(JobTable).select_job(job_id)
    await pilot.press("enter")
    await settle(pilot)
    return pilot.app.screen.query_one(LogView)


async def test_scrolling_back_over_a_progress_bar_longer_than_a_read(make_app) -> None:
    fake = FakeServerClient("lab")
    job = fake.add_job("tqdm", state="succeeded", started_at=1.0, ended_at=2.0,
                       exit_code=0)
    bar = tqdm_bar()
    assert len(bar) > CHUNK
    fake.append_log(job.id, "".join(f"line {i}\n" for i in range(1, 51)) + bar
                    + "".join(f"after {i}\n" for i in range(1, 6)))
    app = make_app(servers={"lab": fake})
    async with app.run_test(size=SIZE) as pilot:
        log = await open_log(pilot, job.id)
        assert log.lines[-5:] == [f"after {i}" for i in range(1, 6)]
        seen = await scroll_to_top(pilot, log)
        assert log.lines[0] == "line 1" and log.top == 0
        states = [line for line in log.lines if line.startswith("Epoch")]
        # The bar shows as pieces, each a whole state a terminal drew, the last one 100%.
        assert states and all(STATE.fullmatch(s) for s in states), states
        assert states[-1].startswith("Epoch 1: 100%|####################| 5000/5000")
        assert log.lines == [*(f"line {i}" for i in range(1, 51)), *states,
                             *(f"after {i}" for i in range(1, 6))]
        assert "line 50" in seen


async def test_scrolling_back_through_several_huge_lines_reaches_the_top(make_app) -> None:
    fake = FakeServerClient("lab")
    job = fake.add_job("huge", state="succeeded", started_at=1.0, ended_at=2.0,
                       exit_code=0)
    huge = [f"huge {i} " + "x" * (3 * CHUNK) for i in range(4)]
    fake.append_log(job.id, "first\n" + "\n".join(huge) + "\n" + "y" * (5 * CHUNK) + "END")
    app = make_app(servers={"lab": fake})
    async with app.run_test(size=SIZE) as pilot:
        log = await open_log(pilot, job.id)
        assert log.lines[-1].endswith("yyyyEND")  # the last line's last part
        seen = await scroll_to_top(pilot, log)
        assert log.lines[0] == "first"
        heads = [row[:6] for row in seen if row.startswith("huge")]
        assert heads == [f"huge {i}" for i in range(4)]
        # Each piece is shorter than a read; together they are every byte of the line.
        assert all(len(row) <= CHUNK for row in seen)
        assert "".join(seen) == "first" + "".join(huge) + "y" * (5 * CHUNK) + "END"


async def test_reading_forward_through_huge_lines_keeps_a_window(make_app) -> None:
    fake = FakeServerClient("lab")
    job = fake.add_job("huge", state="succeeded", started_at=1.0, ended_at=2.0,
                       exit_code=0)
    fake.append_log(job.id, "first\n" + "z" * (12 * CHUNK) + "\nEND\n")
    app = make_app(servers={"lab": fake})
    async with app.run_test(size=SIZE) as pilot:
        log = await open_log(pilot, job.id)
        await pilot.press("g")
        await settle(pilot)
        assert log.lines[0] == "first"
        for _ in range(40):
            assert len(log.raw) <= MAX_WINDOW + (log.rows + 2) * CHUNK
            assert all(len(line) <= CHUNK for line in log.lines)
            if log.lines[-1] == "END" and log.top + log.rows >= len(log.lines):
                break
            await pilot.press("pagedown")
            await settle(pilot)
        assert log.lines[-1] == "END"
