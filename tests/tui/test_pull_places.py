"""Pull asks where (p), offering the project's place (the job's name) and remembering
the answer as that place; P pulls there without asking; the path stays shown after
the pull."""

from __future__ import annotations

from textual.widgets import Input, Label
from tui_kit import SIZE, settle

from nai_tui.tui.pull_places import PullPlaces
from nai_tui.tui.screens.jobs import JobsScreen
from nai_tui.tui.screens.prompt import PromptScreen
from nai_tui.tui.widgets.job_table import JobTable
from nai_tui.tui.widgets.transfer_bar import TransferBar


async def test_pull_asks_where_remembers_and_shows_the_path(make_app, tmp_path) -> None:
    app = make_app()
    elsewhere = tmp_path / "elsewhere"
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one(JobTable).select_job(6)
        await pilot.press("p")
        await settle(pilot)
        prompt = app.screen
        assert isinstance(prompt, PromptScreen)  # plain p asks
        field = prompt.query_one(Input)
        assert field.value == str(tmp_path / "out")  # the default, nothing remembered yet
        field.value = str(elsewhere)
        await pilot.press("enter")
        await settle(pilot)
        assert (elsewhere / "6" / "weights.npz").exists()
        bar = app.screen.query_one(TransferBar)
        assert bar.display and str(elsewhere / "6") in str(bar.query_one(Label).content)
        places = PullPlaces(app.config.path.parent / "pull-places.json")
        assert places.folder("numpy-regression", tmp_path) == elsewhere
        (elsewhere / "6" / "weights.npz").unlink()
        await pilot.press("p")  # asks again, offering the remembered place
        await settle(pilot)
        assert app.screen.query_one(Input).value == str(elsewhere)
        await pilot.press("escape")  # changed my mind: nothing pulled
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen)
        assert not (elsewhere / "6" / "weights.npz").exists()
        await pilot.press("P")  # no question: the project's place
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen)
        assert (elsewhere / "6" / "weights.npz").exists()
        assert not (tmp_path / "out" / "6").exists()


def test_an_unreadable_places_file_means_the_default(tmp_path) -> None:
    path = tmp_path / "pull-places.json"
    path.write_text("not json")
    places = PullPlaces(path)
    assert places.folder("x", tmp_path / "d") == tmp_path / "d"
    places.remember("x", tmp_path / "e")
    assert PullPlaces(path).folder("x", tmp_path / "d") == tmp_path / "e"
