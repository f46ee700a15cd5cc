"""The jobs table as k9s and vim users drive it: j/k/g/G, ctrl+d/u, marks with Space
and one confirmation to cancel them all, sorting by column, and the filter line."""

from __future__ import annotations

import pytest
from tui_kit import SIZE, notifications, settle, text_of

from nai_server.protocol import JobInfo
from nai_tui.tui.filters import parse_filter
from nai_tui.tui.screens.confirm import ConfirmScreen
from nai_tui.tui.widgets.job_table import JobTable


def job(**fields: object) -> JobInfo:
    base: dict[str, object] = {
        "id": 7, "name": "resnet-sweep-3", "user": "alice", "group": None,
        "state": "failed", "spec": {"gpus": 4}, "code_tree": None, "gpus": [],
        "submitted_at": 0.0}
    return JobInfo(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "hit"), [
    ("user:alice state:failed gpus:>2 name~^resnet-s", True),
    ("user:bob", False), ("state:running", False), ("gpus:>=4", True), ("gpus:<4", False),
    ("gpus:4", True), ("name~sweep-[0-9]$", True), ("name~^sweep", False), ("#7", True),
    ("#8", False), ("sweep alice", True), ("sweep carol", False), ("", True)])
def test_the_filter_line(text: str, hit: bool) -> None:
    found = parse_filter(text)
    assert found.problem is None and found.matches(job()) is hit


def test_what_the_filter_line_cannot_read_is_said() -> None:
    assert "no state 'broken'" in str(parse_filter("state:broken").problem)
    assert "gpus:" in str(parse_filter("gpus:lots").problem)
    assert "name~(" in str(parse_filter("name~(").problem)
    assert "at most" in str(parse_filter("name~" + "a" * 300).problem)
    both = parse_filter("user:carol state:queued")
    assert (both.user, both.state, both.local) == ("carol", "queued", False)


async def test_vim_keys_move_the_cursor(make_app, fake) -> None:
    for i in range(60):
        fake.add_job(f"extra-{i}", state="succeeded", ended_at=1.0 + i)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        await pilot.press("j", "j")
        assert table.cursor_row == 2
        await pilot.press("k")
        assert table.cursor_row == 1
        await pilot.press("G")
        assert table.cursor_row == table.row_count - 1
        await pilot.press("g")
        assert table.cursor_row == 0
        await pilot.press("ctrl+d")
        half = table.cursor_row
        assert half > 5
        await pilot.press("ctrl+u")
        assert table.cursor_row == 0


async def test_marked_jobs_are_cancelled_with_one_confirmation(make_app, fake) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        table.select_job(4)
        await pilot.press("space")  # marks #4 and moves on, to #5
        assert table.selected_job.id == 5
        await pilot.press("space")
        table.select_job(6)  # succeeded: marked, but nothing to cancel
        await pilot.press("space")
        assert [j.id for j in table.marked_jobs()] == [4, 5, 6]
        assert "3 marked" in text_of(app.screen.query_one("#jobs-status"))
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Cancel 2 marked job(s)?" in text_of(app.screen.query_one(".dialog-title"))
        await pilot.press("y")
        await settle(pilot)
        assert fake.job(4).state == "cancelled" and fake.job(5).state == "cancelled"
        assert fake.job(1).state == "running"  # the cursor's job was not touched
        assert any("2 job(s) cancelled" in n for n in notifications(app))
        assert table.marked_jobs() == [table.jobs[6]]


async def test_escape_clears_every_filter_and_the_marks(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        await pilot.press("space", "m", "s")
        await settle(pilot)
        await pilot.press("slash", *"nothing-like-this")
        await settle(pilot)
        assert table.row_count == 0 and "no job matches" in text_of(table)
        await pilot.press("escape")  # leaves the filter box (the box has focus)
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen.scope == "all" and app.screen.state_filter == ""
        assert table.row_count == 9 and not table.marked


async def test_sort_by_column_and_reverse(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        sensible = table.order
        await pilot.press("greater_than_sign")  # by ID
        assert table.order == sorted(sensible) and "ID▲" in text_of(table).splitlines()[0]
        await pilot.press("exclamation_mark")
        assert table.order == sorted(sensible, reverse=True)
        await pilot.press("exclamation_mark", "greater_than_sign")  # by NAME
        names = [table.jobs[i].name.lower() for i in table.order]
        assert names == sorted(names)
        await pilot.press("less_than_sign", "less_than_sign")  # back to the sensible order
        assert table.order == sensible
        await pilot.press("less_than_sign")  # from the sensible order: the last column
        assert "NOTE▲" in text_of(table).splitlines()[0]
