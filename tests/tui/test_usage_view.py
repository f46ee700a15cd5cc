"""Per-user GPU use on the GPU strip and in the admin screen's Usage tab (`sshare`)."""

from __future__ import annotations

from textual.widgets import DataTable
from tui_kit import SIZE, settle

from nai_server.protocol.usage import UsageReport, UsageRow
from nai_tui.testing import FakeServerClient
from nai_tui.tui.widgets.gpu_strip import GpuStrip
from nai_tui.tui.widgets.usage import quota_use, strip_summary


async def test_the_gpu_strip_names_who_holds_how_many_and_who_is_over(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        title = str(app.screen.query_one(GpuStrip).border_title)
        assert "by user: carol 4 (1.9× over) · alice 2 · bob 1" in title


async def test_a_server_without_usage_leaves_the_title_alone_and_stops_asking(
        make_app) -> None:
    plain = FakeServerClient("lab", gpus=2)  # answers 501 to /v1/usage
    app = make_app(servers={"lab": plain})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "by user" not in str(app.screen.query_one(GpuStrip).border_title)
        assert app.screen.usage_answers is False


async def test_admin_usage_tab_shows_standing_and_quota_use(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("A")
        await settle(pilot)
        await pilot.press("u")
        await settle(pilot)
        table = app.screen.query_one("#usage-table", DataTable)
        assert table.has_focus and table.row_count == 4
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows[0][:2] == ["user", "carol"] and rows[0][5] == "1.9× over"
        assert rows[1][6] == "96.5/500 GPU-h in 30 d"
        assert rows[3][:2] == ["group", "vision"]


def test_summary_and_quota_wording() -> None:
    me = UsageRow(kind="user", name="me", gpus_in_use=0, usage_gpu_hours=1.0, share=0.1,
                  standing=0.2, factor=0.9, max_gpus=2)
    assert strip_summary(UsageReport(half_life_hours=1, rows=[me]), "me") == "me 0"
    assert strip_summary(UsageReport(half_life_hours=1, rows=[me]), "other") == ""
    assert quota_use(me) == "0/2 GPUs"
