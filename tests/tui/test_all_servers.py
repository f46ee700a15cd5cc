"""The all-servers view (O on the jobs screen): every configured server's GPUs and
jobs, a SERVER column first, a server that does not answer shown as down in one line,
and Enter switching to the selected job's server."""

from __future__ import annotations

from textual.widgets import DataTable
from tui_kit import NOW, SIZE, settle, text_of

from nai_server.protocol import ConnectionFailed
from nai_tui.testing import FakeServerClient
from nai_tui.testing_demo import demo_server
from nai_tui.tui.screens.all_servers import AllServersScreen
from nai_tui.tui.screens.jobs import JobsScreen
from nai_tui.tui.widgets.gpu_strip import GpuStrip


def _rows(screen: AllServersScreen) -> list[tuple[str, str]]:
    table = screen.query_one(DataTable)
    return [(table.get_row_at(i)[0].plain, table.get_row_at(i)[2])
            for i in range(table.row_count)]


async def test_every_server_side_by_side_and_enter_switches(make_app, fake) -> None:
    box = FakeServerClient("box", user="alice", gpus=2)
    box.now = NOW
    box.add_job("on-the-box", state="running", gpus=[1], submitted_at=NOW + 60,
                started_at=NOW + 61)
    app = make_app(servers={"box": box})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("O")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, AllServersScreen)
        rows = _rows(screen)
        assert rows[0] == ("box", "on-the-box")  # the newest first, whichever server
        assert {s for s, _ in rows} == {"lab", "box"}
        assert len([r for r in rows if r[0] == "lab"]) == len(fake.jobs().jobs)
        strips = {s.id: s for s in screen.query(GpuStrip)}
        assert strips["gpus-box"].border_title.startswith("box · 2 GPUs")
        assert strips["gpus-lab"].border_title.startswith("lab · 8 GPUs")
        assert "from 2 of 2 servers" in text_of(screen.query_one("#all-status"))
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen) and app.server.name == "box"


async def test_a_server_that_does_not_answer_is_shown_as_down(make_app) -> None:
    lab = demo_server(NOW)

    def connect(entry):
        if entry.name == "box":
            raise ConnectionFailed("box: ssh: connect to host gpubox port 22:\nNo route")
        return lab

    app = make_app(connect=connect)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("O")
        await settle(pilot)
        screen = app.screen
        assert {s for s, _ in _rows(screen)} == {"lab"}
        status = text_of(screen.query_one("#all-status"))
        assert "from 1 of 2 servers" in status
        assert "box: down: box: ssh: connect to host gpubox port 22: No route" in status
        assert screen.query_one("#gpus-box", GpuStrip).border_title == "box · down"
        await pilot.press("escape")
        assert isinstance(app.screen, JobsScreen) and app.server.name == "lab"
