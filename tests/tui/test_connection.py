"""Servers: choosing one, a lost connection (a notice, retries with backoff, recovery),
and failures that never reach the screen as tracebacks."""

from __future__ import annotations

import asyncio

from textual.widgets import DataTable
from tui_kit import NOW, SIZE, notifications, settle, text_of

from nai_server.protocol import ConnectionFailed
from nai_tui.config import ClientConfig, ServerEntry
from nai_tui.testing import FakeServerClient
from nai_tui.testing_demo import demo_server
from nai_tui.tui.ports import reconnects
from nai_tui.tui.screens.jobs import JobsScreen
from nai_tui.tui.screens.servers import ServersScreen
from nai_tui.tui.widgets.job_table import JobTable


def test_backoff_doubles_up_to_a_cap() -> None:
    backoff = reconnects(first=1.0, cap=10.0, rand=lambda: 0.0)
    assert [backoff.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    backoff.reset()
    assert backoff.next() == 1.0
    # The client's one backoff: jittered, so TUIs cut off together come back apart,
    # and never spent, so the app keeps trying for as long as it runs.
    spread = reconnects(first=1.0, cap=10.0, rand=lambda: 1.0)
    assert [spread.next() for _ in range(1000)][-1] == 7.5


async def test_switch_server(make_app, fake) -> None:
    box = FakeServerClient("box", user="alice", gpus=2)
    box.add_job("on-the-box", state="running", gpus=[0], started_at=NOW)
    app = make_app(servers={"box": box})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("S")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, ServersScreen)
        table = screen.query_one(DataTable)
        assert table.get_row("lab")[3].plain == "connected"
        assert table.get_row("box")[3].plain == "answers"
        table.move_cursor(row=table.get_row_index("box"))
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen)
        assert app.server.name == "box" and app.client is box and fake.closed
        jobs = app.screen.query_one(JobTable)
        assert [j.name for j in jobs.jobs.values()] == ["on-the-box"]
        assert "alice@box" in app.sub_title


async def test_an_unreachable_server_is_shown_as_such(make_app) -> None:
    def connect(entry):
        if entry.name == "box":
            raise ConnectionFailed("box: ssh: connect to host gpubox port 22: No route")
        return demo_server(NOW)

    app = make_app(connect=connect)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("S")
        await settle(pilot)
        row = app.screen.query_one(DataTable).get_row("box")
        assert row[3].plain == "unreachable" and "No route" in row[4].plain


async def test_lost_connection_notice_and_reconnect(make_app, fake) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        fake.fail = "Connection reset by peer"
        await pilot.press("r")
        await settle(pilot)
        assert app.connection == "lost"
        assert any("Cannot reach lab" in n and "Connection reset" in n
                   for n in notifications(app))
        assert "retry in 600s" in app.sub_title
        assert app.screen.query_one(JobTable).row_count == 9  # what we had stays
        calls = len(fake.calls)
        await pilot.press("r")  # no polling while away
        await settle(pilot)
        assert len(fake.calls) == calls
        await pilot.press("R")  # retry now: still down, next wait is longer
        await settle(pilot)
        assert app.connection == "lost" and "attempt 2" in app.sub_title
        fake.fail = None
        fake.add_job("while-away", state="queued")
        await pilot.press("R")
        await settle(pilot)
        assert app.connection == "connected"
        assert any("Connected to lab again" in n for n in notifications(app))
        assert app.screen.query_one(JobTable).row_count == 10  # polled again
        assert len([n for n in notifications(app) if "Cannot reach" in n]) == 1


async def test_reconnects_by_itself_with_backoff(make_app, fake) -> None:
    app = make_app(backoff=reconnects(first=0.05, cap=0.2))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        fake.fail = "broken pipe"
        await pilot.press("r")
        await settle(pilot)
        assert app.connection in ("lost", "reconnecting")
        fake.fail = None
        deadline = asyncio.get_running_loop().time() + 10
        while not app.connected:
            assert asyncio.get_running_loop().time() < deadline, "did not reconnect"
            await pilot.pause(0.05)
        assert app.backoff.retries == 0


async def test_first_connection_fails_then_succeeds(make_app, fake) -> None:
    attempts = []

    def connect(entry):
        attempts.append(entry.name)
        if len(attempts) == 1:
            raise ConnectionFailed("no nai server running on this machine; start one with "
                                   "`nai up`")
        return fake

    app = make_app(connect=connect)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.connection == "lost"
        assert any("nai up" in n for n in notifications(app))
        assert "waiting for the server" in text_of(app.screen.query_one("#gpus"))
        await pilot.press("R")
        await settle(pilot)
        assert app.connected and app.screen.query_one(JobTable).row_count == 9


async def test_unexpected_errors_become_notifications(make_app, fake) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        fake.error = RuntimeError("boom")
        await pilot.press("r")
        await settle(pilot)
        assert any("RuntimeError: boom" in n for n in notifications(app))
        assert app.is_running and app.connected  # not a connection problem
        fake.error = None
        await pilot.press("r")
        await settle(pilot)
        assert app.screen.query_one(JobTable).row_count == 9


async def test_the_servers_screen_rereads_the_config(make_app, tmp_path, monkeypatch) -> None:
    """A server added with `nai server add` while the TUI runs appears on `r`; the
    personal daemon on this machine stays listed once a remote server is configured."""
    socket = tmp_path / "personal.sock"
    socket.touch()
    monkeypatch.setattr("nai_tui.tui.screens.servers.personal_socket", lambda: socket)
    app = make_app(connect=lambda entry: demo_server(NOW))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("S")
        await settle(pilot)
        table = app.screen.query_one(DataTable)
        assert [str(k.value) for k in table.rows] == ["local", "box", "lab"]
        config = ClientConfig.load(tmp_path / "config.yaml")  # what the CLI does
        config.add(ServerEntry("new", "ssh://alice@new.example.org"))
        config.save()
        await pilot.press("r")
        await settle(pilot)
        assert [str(k.value) for k in table.rows] == ["local", "box", "lab", "new"]
        assert table.get_row("new")[3].plain == "answers"
        (tmp_path / "config.yaml").write_text("servers: [broken\n")
        await pilot.press("r")
        await settle(pilot)
        assert "new" in [str(k.value) for k in table.rows]
        assert "cannot read the client config" in str(
            app.screen.query_one("#servers-note").render())
