"""`JobTable` on its own: what a refresh repaints, where the cursor goes when rows come,
go and move, keys, clicks and the look when focus moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widgets import Input
from tui_kit import NOW, text_of

from nai_server.protocol import JobInfo
from nai_tui.testing import FakeServerClient
from nai_tui.tui.widgets.job_table import JobTable


class TableApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.opened: list[int] = []

    def compose(self) -> ComposeResult:
        yield Input()
        yield JobTable()

    def on_job_table_opened(self, event: JobTable.Opened) -> None:
        self.opened.append(event.job.id)


def queue(n: int, *, running: int = 0) -> list[JobInfo]:
    """`running` running jobs (the longest running first on screen), then queued ones."""
    fake = FakeServerClient("t")
    for i in range(n):
        if i < running:
            fake.add_job(f"job-{i + 1}", state="running", gpus=[i], started_at=NOW - 600 + i,
                         submitted_at=NOW - 900)
        else:
            fake.add_job(f"job-{i + 1}", submitted_at=NOW - 60)
    return sorted(fake.jobs(limit=1000).jobs, key=lambda job: job.id)


def lines(table: JobTable) -> list[str]:
    return text_of(table).splitlines()


def selected(table: JobTable) -> int | None:
    job = table.selected_job
    return None if job is None else job.id


async def test_a_refresh_repaints_only_the_lines_that_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(JobTable)
        jobs = queue(30, running=2)
        table.show(jobs, NOW)
        await pilot.pause()
        assert lines(table)[1].split()[:3] == ["1", "job-1", "alice"]
        assert "10m00s" in lines(table)[1]  # running since NOW - 600

        refreshed: list[Region] = []
        original = table.refresh

        def spy(*regions: Region, **kwargs: Any) -> JobTable:
            refreshed.extend(regions or [table.size.region])
            return original(*regions, **kwargs)

        monkeypatch.setattr(table, "refresh", spy)
        table.show(jobs, NOW)  # the same jobs, the same second: nothing to repaint
        assert refreshed == []

        table.show(jobs, NOW + 30)  # the running jobs' runtimes and everyone's age move
        await pilot.pause()
        assert {region.y for region in refreshed} == set(range(1, table.size.height))
        assert "10m30s" in lines(table)[1]

        refreshed.clear()
        table.show([*jobs[:-1], jobs[-1].model_copy(update={"name": "renamed"})], NOW + 30)
        await pilot.pause()
        assert refreshed == []  # the last job is far below the screen
        table.show([jobs[0].model_copy(update={"state": "failed", "ended_at": NOW}),
                    *jobs[1:]], NOW + 30)
        await pilot.pause()
        assert len(refreshed) == table.size.height - 1  # the order changed: every row


async def test_the_cursor_follows_its_job_as_rows_come_go_and_move() -> None:
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(JobTable)
        jobs = queue(10)
        table.show(jobs, NOW)
        assert table.select_job(5) and table.cursor_row == 4
        # two jobs start running: they go on top, the cursor stays on job 5
        started = [job.model_copy(update={"state": "running", "started_at": NOW})
                   for job in jobs[7:9]]
        table.show([*jobs[:7], *started, jobs[9]], NOW)
        await pilot.pause()
        assert table.order[:2] == [8, 9] and selected(table) == 5
        assert table.cursor_row == 6
        assert "job-5" in lines(table)[table.cursor_row + 1]
        # jobs above it leave: still on job 5
        table.show([job for job in jobs if job.id not in (1, 2, 3)], NOW)
        assert selected(table) == 5 and table.cursor_row == 1
        # job 5 itself leaves (a filter): the cursor keeps its row
        table.show([job for job in jobs if job.id != 5], NOW)
        assert table.cursor_row == 1 and selected(table) == 2
        # fewer rows than the cursor's: the last one
        table.show(jobs[:1], NOW)
        assert table.cursor_row == 0 and selected(table) == 1
        table.show([], NOW)
        assert table.selected_job is None and table.row_count == 0
        await pilot.pause()
        assert lines(table)[0].split() == ["ID", "NAME", "USER", "STATE", "GPUS", "RUNTIME",
                                           "AGE", "NOTE"]


@asynccontextmanager
async def table_of(jobs: int) -> AsyncIterator[tuple[TableApp, Pilot[Any], JobTable]]:
    """A 100x20 app whose table shows `jobs` queued jobs."""
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(JobTable)
        table.show(queue(jobs), NOW)
        yield app, pilot, table


async def test_keys_move_the_cursor_and_keep_it_in_view() -> None:
    async with table_of(100) as (app, pilot, table):
        table.focus()
        await pilot.press("down", "down")
        assert selected(table) == 3
        await pilot.press("end")
        assert selected(table) == 100
        assert "job-100" in lines(table)[-1]  # scrolled to it
        await pilot.press("pageup")
        assert table.cursor_row < 99 and "job-100" not in text_of(table)
        visible = lines(table)
        assert any(f" job-{selected(table)} " in line for line in visible)
        await pilot.press("home")
        assert selected(table) == 1 and table.scroll_y == 0
        await pilot.press("pagedown")
        assert table.cursor_row > 1
        await pilot.press("up")
        row = table.cursor_row
        await pilot.press("enter")
        await pilot.pause()
        assert app.opened == [table.order[row]]


async def test_a_click_selects_a_row_and_a_second_opens_it() -> None:
    async with table_of(10) as (app, pilot, table):
        await pilot.pause()
        await pilot.click(JobTable, offset=(10, 3))  # under the header: the third row
        assert selected(table) == 3 and app.opened == []
        await pilot.click(JobTable, offset=(10, 3))
        await pilot.pause()
        assert app.opened == [3]
        await pilot.click(JobTable, offset=(10, 0))  # the header: nothing
        await pilot.click(JobTable, offset=(10, 15))  # below the last row: nothing
        await pilot.pause()
        assert selected(table) == 3 and app.opened == [3]


async def test_the_cursor_looks_different_without_focus() -> None:
    async with table_of(5) as (app, pilot, table):
        table.focus()
        await pilot.pause()
        focused = table.render_line(1)
        app.query_one(Input).focus()
        await pilot.pause()
        blurred = table.render_line(1)
        assert focused.text == blurred.text
        assert [s.style for s in focused] != [s.style for s in blurred]


async def test_names_are_clipped_to_the_width_and_not_read_as_markup() -> None:
    fake = FakeServerClient("t")
    fake.add_job("[bold]a-very-long-name-that-does-not-fit-in-80-columns", user="somebody-else")
    app = TableApp()
    async with app.run_test(size=(80, 10)) as pilot:
        table = app.query_one(JobTable)
        table.show(fake.jobs().jobs, NOW)
        await pilot.pause()
        row = table.row_text(1)
        assert row[1].startswith("[bold]a-very") and row[1].endswith("…")
        assert len(row[1]) == table.widths(1)[1] and row[2] == "somebod…"
        assert "[bold]a-very" in lines(table)[1]
