"""The jobs screen at 80×24: the footer keeps Quit, Admin and Help; the name gets the
cells the user column does not need; a cut note says something, and the selected
job's whole note shows under the table."""

from __future__ import annotations

from itertools import pairwise

from textual.widgets import Static
from tui_kit import settle

from nai_tui.tui.widgets.columns import fit_columns
from nai_tui.tui.widgets.footer import fitting
from nai_tui.tui.widgets.format import fit_note
from nai_tui.tui.widgets.job_table import JobTable

NARROW = (80, 24)


def footer_keys(app) -> list[str]:
    return [key.description for key in app.screen.query("FooterKey")
            if "-command-palette" not in key.classes]


async def test_footer_keeps_quit_admin_and_help_at_80_columns(make_app) -> None:
    app = make_app()
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        shown = footer_keys(app)
        assert {"Quit", "Admin", "Help", "Open", "Submit"} <= set(shown)
        keys = list(app.screen.query("FooterKey"))
        assert all(key.region.right <= 80 for key in keys)
        # nothing overlaps: the keys fit in the footer beside the palette key
        regions = sorted((k.region for k in keys), key=lambda r: r.x)
        assert all(a.right <= b.x for a, b in pairwise(regions))


def test_fitting_leaves_out_the_others_first() -> None:
    keys = [("⏎", "Open"), ("n", "Submit"), ("c", "Cancel"), ("S", "Servers"),
            ("R", "Reconnect"), ("A", "Admin!"), ("q", "Quit!")]
    assert fitting(keys, 200) == (list(range(7)), False)
    chosen, compact = fitting(keys, 40)
    assert compact and {5, 6} <= set(chosen) and 0 in chosen and 4 not in chosen


async def test_name_gets_the_width_user_does_not_need(make_app) -> None:
    app = make_app()
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        widths = table.widths(9)
        assert widths[2] == len("alice")  # the longest user shown, not 8
        assert table.row_text(6)[1] == "numpy-regression"  # 16 cells: whole
        assert sum(widths) + 2 * len(widths) <= table.size.width


def test_fitted_columns_never_exceed_their_most(fake) -> None:
    fake.add_job("x", user="a-very-long-user-name")
    fit = fit_columns(fake.jobs().jobs)
    assert fit["user"] == 8 and fit["state"] == 9


def test_a_cut_note_keeps_its_specific_part() -> None:
    assert fit_note("exit code 1: Traceback: CUDA out of memory", 20) == "CUDA out of memory"
    assert fit_note("needs 4 GPUs, 1 free", 12) == "needs 4…"
    assert fit_note("short", 9) == "short"
    assert len(fit_note("behind job 4 and a great many other words", 9)) <= 9


async def test_the_selected_jobs_whole_note_shows_under_the_table(make_app) -> None:
    app = make_app()
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        line = app.screen.query_one("#jobs-note", Static)
        table.select_job(7)
        await settle(pilot)
        assert line.display and "#7 exit code 1: Traceback: CUDA out of memory" in str(
            line.content)
        assert "CUDA out of memory" not in table.row_text(7)[7] or \
            len(table.row_text(7)[7]) <= table.note_width
        table.select_job(3)  # no note
        await settle(pilot)
        assert not line.display
