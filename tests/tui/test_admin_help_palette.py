"""The admin screen (admins only), the help screen, and the command palette."""

from __future__ import annotations

from functools import partial

from textual.widgets import DataTable, Input, Switch
from tui_kit import NOW, SIZE, notifications, settle, text_of

from nai_tui.testing_demo import demo_server
from nai_tui.tui.palette import NaiCommands
from nai_tui.tui.screens.admin import AdminScreen
from nai_tui.tui.screens.help import HelpScreen
from nai_tui.tui.screens.jobs import JobsScreen
from nai_tui.tui.screens.prompt import PromptScreen
from nai_tui.tui.screens.quota import QuotaScreen
from nai_tui.tui.screens.submit import SubmitScreen


async def test_admin_screen_is_only_for_admins(make_app) -> None:
    app = make_app(servers={"lab": demo_server(NOW, admin=False)})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("A")
        assert isinstance(app.screen, JobsScreen)
        assert "admin" not in {a.binding.action for a in app.screen.active_bindings.values()}


async def test_admin_users_groups_quota_and_drain(make_app, fake) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("A")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, AdminScreen)
        users = screen.query_one("#users-table", DataTable)
        assert [users.get_row_at(i)[0] for i in range(users.row_count)] == [
            "alice", "bob", "carol"]
        assert users.get_row("bob")[3] == "vision"

        await pilot.press("a")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*"dave", "enter")
        await settle(pilot)
        assert "dave" in {u.name for u in fake.users()}
        assert users.row_count == 4

        users.move_cursor(row=1)  # bob
        await pilot.press("e")
        assert isinstance(app.screen, QuotaScreen)
        app.screen.query_one("#max-gpus", Input).value = "4"
        app.screen.query_one("#gpu-hours", Input).value = "100"
        await pilot.press("ctrl+s")
        await settle(pilot)
        bob = next(u for u in fake.users() if u.name == "bob")
        assert bob.quota.max_gpus == 4 and bob.quota.gpu_hours == 100
        assert "≤4 GPUs, 100 GPU-h / 30 d" in users.get_row("bob")[4]

        await pilot.press("d")
        await settle(pilot)
        assert fake.drained() and screen.query_one(Switch).value
        assert any("drained" in n for n in notifications(app))

        await pilot.press("x", "y")  # remove bob, confirmed
        await settle(pilot)
        assert "bob" not in {u.name for u in fake.users()}


async def test_help_lists_the_keys_of_the_screen_below(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = text_of(app.screen.query_one("#help-keys"))
        for line in ("Cancel the selected job", "Submit a folder as a new job",
                     "Filter by the next state", "Choose among the configured servers",
                     "Mark the job", "Sort by the column to the right", "Half a page down"):
            assert line in text
        for internal in ("Focus Next", "Copy selected text", "Page Left", "Page Right"):
            assert internal not in text  # Textual's, not nai's
        assert "↑ k" in text and "g" in text  # every key of an action
        await pilot.press("escape")
        assert isinstance(app.screen, JobsScreen)


async def test_palette_offers_every_action_servers_and_jobs(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        entries = NaiCommands(screen).entries()
        titles = {title for title, _, _ in entries}
        offered = {call.args[0] for _, call, _ in entries
                   if isinstance(call, partial) and isinstance(call.args[0], str)}
        bound = {b.binding.action for b in screen.active_bindings.values()
                 if b.enabled and b.binding.description}
        assert bound <= offered
        assert {"Jobs: Submit a folder as a new job",
                "Jobs: Cancel the selected job, or the marked ones",
                "Show the keys of this screen"} <= titles
        assert "Switch to server box" in titles
        assert "Open job #1 cifar-resnet (alice, running)" in titles
        submit = next(call for title, call, _ in NaiCommands(screen).entries()
                      if title.endswith("Submit a folder as a new job"))
        await submit()
        await pilot.pause()
        assert isinstance(app.screen, SubmitScreen)


async def test_palette_opens_with_ctrl_p_and_runs_a_command(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"open job #6")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.__class__.__name__ == "JobDetailScreen"
        assert app.screen.job_id == 6
