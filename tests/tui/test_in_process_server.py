"""The real app against the real server, in process: `NaiApp` with the real
`ServerClient`, over an ASGI transport to the daemon's own FastAPI app and use cases
(store, scheduler, log reads and searches), not the hand-written fake. The fake stays
for what a real server will not do on demand (faults, exact timings)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from textual.widgets import DataTable
from tui_kit import SIZE, notifications, settle, text_of

from nai_server.api import create_app
from nai_server.app.use_cases import UseCases
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import AsPeer, tick_until
from nai_tui.config import ClientConfig, ServerEntry
from nai_tui.remote.client import ServerClient
from nai_tui.testing_demo import FakeTransfers
from nai_tui.tui.app import NaiApp
from nai_tui.tui.ports import reconnects
from nai_tui.tui.screens.confirm import ConfirmScreen
from nai_tui.tui.screens.job_detail import JobDetailScreen
from nai_tui.tui.widgets.job_table import JobTable
from nai_tui.tui.widgets.log_view import LogView


@pytest.fixture
def client(service: UseCases) -> Iterator[ServerClient]:
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as http:
        yield ServerClient(http, "here")


@contextlib.contextmanager
def real_app(client: ServerClient, tmp_path: Path) -> Iterator[NaiApp]:
    """The app on `client`; the connection is the test's, so the app's close of it on
    leaving is kept from closing the in-process transport under the test."""
    kept = client.close
    client.close = lambda: None  # type: ignore[method-assign]
    try:
        yield NaiApp(lambda entry: client, config=ClientConfig(tmp_path / "config.yaml"),
                     server=ServerEntry("here", "local"), transfers=FakeTransfers(),
                     downloads=tmp_path / "out", poll_interval=3600.0,
                     backoff=reconnects(first=600.0, cap=3600.0))
    finally:
        client.close = kept  # type: ignore[method-assign]


def on_screen(log: LogView) -> list[str]:
    """The log view's rows as shown, the status line last."""
    return [line.strip() for line in text_of(log).splitlines()]


def submit(client: ServerClient, name: str, command: str = "sleep 60",
           gpus: int = 0) -> int:
    return client.submit(spec={"name": name, "command": command, "gpus": gpus},
                         code_tree=None).id


async def test_the_queue_pages_through_the_server_with_true_counts(
        client: ServerClient, service: UseCases, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from nai_tui.tui import queue
    from nai_tui.tui.screens import jobs

    monkeypatch.setattr(queue, "PAGE", 20)  # the newest page: 20 jobs, not 300
    monkeypatch.setattr(queue, "MORE", 25)
    monkeypatch.setattr(jobs, "NEAR_END", 2)
    client.drain(True)  # nothing starts: the queue stays as submitted
    old = [submit(client, f"old-{i}") for i in range(40)]
    for job_id in old:
        client.cancel(job_id)  # ended, older than the newest page
    waiting = [submit(client, f"wait-{i}") for i in range(30)]
    with real_app(client, tmp_path) as app:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen, table = app.screen, app.screen.query_one(JobTable)
            assert {j.id for j in table.jobs.values()} >= set(waiting)  # every queued one
            status = text_of(screen.query_one("#jobs-status"))
            assert "30 queued" in status and "of 70 read" in status
            assert "old-0" not in {j.name for j in table.jobs.values()}
            for _ in range(10):
                if screen.older is None:
                    break
                await pilot.press("G")
                await settle(pilot)
            assert "old-0" in {j.name for j in table.jobs.values()}
            assert "all 70 read" in text_of(screen.query_one("#jobs-status"))


async def test_the_filter_finds_old_history_on_the_server(
        client: ServerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nai_tui.tui import queue
    from nai_tui.tui.screens import jobs

    monkeypatch.setattr(queue, "PAGE", 10)
    monkeypatch.setattr(queue, "MORE", 10)
    monkeypatch.setattr(jobs, "NEAR_END", 2)
    client.drain(True)
    for i in range(35):
        client.cancel(submit(client, f"run-{i}"))
    with real_app(client, tmp_path) as app:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = app.screen.query_one(JobTable)
            assert table.row_count == 10
            await pilot.press("slash", *"name~^run-[0-2]$ state:cancelled")
            await settle(pilot)
            assert sorted(j.name for j in table.jobs.values()) == ["run-0", "run-1", "run-2"]
            app.screen.query_one("#filter-text").value = "state:failed"
            await settle(pilot)
            assert table.row_count == 0 and "no job matches" in text_of(table)


async def test_marked_jobs_are_cancelled_on_the_server_with_one_confirmation(
        client: ServerClient, tmp_path: Path) -> None:
    client.drain(True)
    first, second, third = (submit(client, f"q-{i}") for i in range(3))
    with real_app(client, tmp_path) as app:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = app.screen.query_one(JobTable)
            for job_id in (first, third):
                table.select_job(job_id)
                await pilot.press("space")
            await pilot.press("c")
            assert isinstance(app.screen, ConfirmScreen)
            assert "Cancel 2 marked job(s)?" in text_of(app.screen.query_one(".dialog-title"))
            await pilot.press("y")
            await settle(pilot)
            assert any("2 job(s) cancelled" in n for n in notifications(app))
    assert client.job(first).state == client.job(third).state == "cancelled"
    assert client.job(second).state == "queued"


async def test_a_long_log_is_read_by_range_and_searched_on_the_server(
        client: ServerClient, service: UseCases, tmp_path: Path) -> None:
    job_id = submit(client, "long", "seq 1 60000; echo the-last-line")
    tick_until(service, lambda: client.job(job_id).state in TERMINAL_STATES,
               what="the job to end")
    assert client.job(job_id).state == "succeeded"
    with real_app(client, tmp_path) as app:
        async with app.run_test(size=(100, 20)) as pilot:
            await settle(pilot)
            app.screen.query_one(JobTable).select_job(job_id)
            await pilot.press("enter")
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, JobDetailScreen)
            log = screen.query_one(LogView)
            assert on_screen(log)[-2] == "the-last-line"  # opened at its end
            await pilot.press("g")
            await settle(pilot)
            assert on_screen(log)[0] == "1"
            await pilot.press("slash", *"59999", "enter")
            await settle(pilot)
            assert log.match_offset is not None
            assert "59999" in on_screen(log)


async def test_the_admin_usage_tab_reads_the_servers_accounting(
        client: ServerClient, service: UseCases, tmp_path: Path) -> None:
    import getpass

    me = getpass.getuser()
    job_id = submit(client, "holder", gpus=2)
    tick_until(service, lambda: client.job(job_id).state == "running", what="it to run")
    with real_app(client, tmp_path) as app:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("A")
            await settle(pilot)
            await pilot.press("u")
            await settle(pilot)
            table: Any = app.screen.query_one("#usage-table", DataTable)
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
            assert rows[0][:3] == ["user", me, "2"]
    client.cancel(job_id)
