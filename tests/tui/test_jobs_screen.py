"""The home screen: the queue, the GPUs, filters, live refresh, cancel, copy, pull."""

from __future__ import annotations

import threading

from textual.widgets import Input, Select
from tui_kit import NOW, SIZE, notifications, settle, text_of

from nai_tui.testing import FakeServerClient
from nai_tui.testing_demo import demo_server
from nai_tui.tui.screens.confirm import ConfirmScreen
from nai_tui.tui.screens.jobs import JobsScreen
from nai_tui.tui.widgets.footer import Footer
from nai_tui.tui.widgets.gpu_strip import GpuStrip
from nai_tui.tui.widgets.job_table import JobTable


def shown_ids(table: JobTable) -> list[int]:
    return table.order


async def test_queue_is_sorted_running_then_queued_then_recent_ends(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        # running by start (longest first), the queue in order, then the latest ends
        assert shown_ids(table) == [3, 1, 2, 4, 5, 6, 7, 8, 9]
        assert table.row_text(4)[7] == "needs 4 GPUs, 1 free"
        assert "connected" in app.sub_title and "alice@lab" in app.sub_title


async def test_gpu_strip_shows_holders_and_foreign_use(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        strip = app.screen.query_one(GpuStrip)
        text = text_of(strip)
        assert "#1 alice" in text and "#3 carol" in text
        assert "⚠dave 12G" in text  # a process nai did not start
        assert "97%" in text and "30/80G" in text
        assert strip.border_title.startswith("8 GPUs (fake)")


async def test_filters_text_state_and_mine(make_app, fake) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        await pilot.press("slash", *"bob")
        assert app.focused is app.screen.query_one("#filter-text", Input)
        assert shown_ids(table) == [2, 4, 9]
        await pilot.press("escape")  # clears the filter, back to the table
        assert app.focused is table and len(shown_ids(table)) == 9
        await pilot.press("m")  # mine: fetched with scope=mine
        await settle(pilot)
        assert shown_ids(table) == [1, 5, 6, 8]
        app.screen.query_one("#filter-state", Select).value = "queued"
        await settle(pilot)
        assert shown_ids(table) == [5]
        assert fake.calls.count("jobs") >= 3


async def test_refresh_updates_rows_in_place_and_keeps_the_cursor(make_app, fake) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        table.select_job(4)
        await pilot.pause()
        # job 5 starts, job 2 ends, a new job arrives
        fake.update_job(5, state="running", gpus=[7], started_at=NOW, reason=None)
        fake.update_job(2, state="succeeded", ended_at=NOW, exit_code=0)
        new = fake.add_job("fresh", state="queued")
        await pilot.press("r")
        await settle(pilot)
        assert table.selected_job is not None and table.selected_job.id == 4
        assert shown_ids(table) == [3, 1, 5, 4, new.id, 2, 6, 7, 8, 9]
        assert table.row_text(2)[3] == "succeeded"
        on_screen = text_of(table).splitlines()  # the header, then the rows in order
        assert on_screen[6].split()[:4] == ["2", "bert-finetune", "bob", "succeeded"]
        assert on_screen[3].split()[:4] == ["5", "cifar-resnet-wide", "alice", "running"]


async def test_polls_never_overlap(make_app, fake) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        fake.gate = threading.Event()
        calls = fake.calls.count("jobs")
        for _ in range(5):
            await pilot.press("r")
        await pilot.pause()
        assert fake.calls.count("jobs") == calls + 1  # one fetch; the others skipped
        fake.gate.set()
        await settle(pilot)
        assert fake.max_in_flight == 1


async def test_large_history_still_shows_old_running_jobs(make_app) -> None:
    fake = demo_server(NOW)
    for i in range(320):
        fake.add_job(f"done-{i}", state="succeeded", submitted_at=NOW - 100 + i,
                     started_at=NOW - 99 + i, ended_at=NOW - 90 + i)
    app = make_app(servers={"lab": fake})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        ids = shown_ids(app.screen.query_one(JobTable))
        assert ids[:5] == [3, 1, 2, 4, 5]  # older than the newest 300, still listed
        assert "of 329 read" in text_of(app.screen.query_one("#jobs-status"))


def big_queue() -> FakeServerClient:
    """2,000 finished jobs, then 1,446 queued: more than any one page holds."""
    fake = demo_server(NOW)
    for i in range(2000):
        fake.add_job(f"old-{i}", state="failed" if i % 100 == 7 else "succeeded",
                     submitted_at=NOW - 9000 + i, started_at=NOW - 8999 + i,
                     ended_at=NOW - 8990 + i)
    for i in range(1446):
        fake.add_job(f"wait-{i}", state="queued", submitted_at=NOW - 10 + i / 1000)
    return fake


async def test_the_queue_is_complete_and_its_counts_true(make_app) -> None:
    fake = big_queue()
    app = make_app(servers={"lab": fake})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen, table = app.screen, app.screen.query_one(JobTable)
        queued = [j for j in table.jobs.values() if j.state == "queued"]
        assert len(queued) == 1446 + 2  # every one (two are the demo's)
        status = text_of(screen.query_one("#jobs-status"))
        assert "1448 queued" in status and "3 running" in status
        assert "old-0" not in {j.name for j in table.jobs.values()}
        for _ in range(10):  # to the end of what was read: the next page follows
            if screen.older is None:
                break
            await pilot.press("G")
            await settle(pilot)
        assert "old-0" in {j.name for j in table.jobs.values()}, (
            table.row_count, screen.older, notifications(app))
        assert f"all {len(fake._jobs)} read" in text_of(screen.query_one("#jobs-status"))


async def test_the_filter_searches_the_whole_history(make_app) -> None:
    fake = big_queue()
    asked: list[str | None] = []
    every = fake.jobs

    def jobs(**query):
        asked.append(query.get("state"))
        return every(**query)

    fake.jobs = jobs  # type: ignore[method-assign]
    app = make_app(servers={"lab": fake})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"name~^old-1[0-9]$")
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        assert sorted(j.name for j in table.jobs.values()) == [f"old-{i}" for i in range(10, 20)]
        app.screen.query_one("#filter-text").value = "state:failed gpus:>=1 old"
        await settle(pilot)
        assert {j.name for j in table.jobs.values()} == {f"old-{i}" for i in range(7, 2000, 100)}
        assert "failed" in asked  # state: is asked of the server
        app.screen.query_one("#filter-text").value = "nothing-like-this"
        await settle(pilot)
        assert "no job matches these filters" in text_of(table)
        await pilot.press("escape")
        assert app.screen.query_one("#filter-text").value == ""


async def test_cancel_asks_first(make_app, fake) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        table.select_job(5)
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert isinstance(app.screen, JobsScreen)
        assert fake.job(5).state == "queued"
        await pilot.press("c")
        await pilot.press("y")
        await settle(pilot)
        assert fake.job(5).state == "cancelled"
        assert table.row_text(5)[3] == "cancelled"
        assert any("Job 5 cancelled" in n for n in notifications(app))


async def test_cancel_refused_by_the_server_is_a_notice(make_app) -> None:
    fake = demo_server(NOW, admin=False)
    app = make_app(servers={"lab": fake})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one(JobTable).select_job(2)  # bob's
        await pilot.press("c", "y")
        await settle(pilot)
        assert fake.job(2).state == "running"
        assert any("belongs to bob" in n for n in notifications(app))


async def test_copy_id_and_pull_outputs(make_app, tmp_path) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        table.select_job(1)
        await pilot.press("y")
        assert app.clipboard == "1"
        await pilot.pause()
        keys = {action for _, action, *_ in Footer.shown(app.screen)}
        assert "cancel_job" in keys and "pull" not in keys  # running: no outputs yet
        await pilot.press("p")
        await settle(pilot)
        assert not (tmp_path / "out" / "1").exists()
        table.select_job(6)
        await pilot.pause()
        keys = {action for _, action, *_ in Footer.shown(app.screen)}
        assert "pull" in keys and "cancel_job" not in keys  # ended: nothing to cancel
        await pilot.press("p")
        await settle(pilot)
        await pilot.press("enter")  # where: the default place
        await settle(pilot)
        assert (tmp_path / "out" / "6" / "weights.npz").stat().st_size == 2006
        assert (tmp_path / "out" / "6" / "plots" / "loss.txt").exists()
        assert any("3 file(s) downloaded" in n for n in notifications(app))


async def test_clicking_a_gpu_selects_its_job(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # under the title line, three GPUs a line at 120 columns
        await pilot.click(GpuStrip, offset=(4, 2))  # GPU 3 → job 3
        assert app.screen.query_one(JobTable).selected_job.id == 3
        await pilot.click(GpuStrip, offset=(4, 1))  # GPU 0 → job 1
        assert app.screen.query_one(JobTable).selected_job.id == 1


async def test_fits_80_by_24(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        strip = app.screen.query_one(GpuStrip)
        assert strip.size.height == 4  # 8 GPUs, two side by side
        table = app.screen.query_one(JobTable)
        assert table.size.height >= 10 and table.region.bottom <= 22
        assert table.row_count == 9
