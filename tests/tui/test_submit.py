"""Submitting a folder: the form is prefilled from nai.yaml, sync shows progress, and
the new job's detail opens."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Button, Input, Select
from tui_kit import SIZE, notifications, settle, text_of

from nai_tui.tui.screens.job_detail import JobDetailScreen
from nai_tui.tui.screens.submit import SubmitScreen

SPEC = """\
name: tiny
command: python train.py --epochs 2
gpus: 1
time_limit: 10m
"""


def job_folder(root: Path) -> Path:
    folder = root / "tiny"
    folder.mkdir()
    (folder / "nai.yaml").write_text(SPEC)
    (folder / "train.py").write_text("print('hello')\n")
    return folder


async def test_submit_a_folder_and_land_on_the_job(make_app, fake, tmp_path) -> None:
    folder = job_folder(tmp_path)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        screen = app.screen
        assert isinstance(screen, SubmitScreen)
        screen.query_one("#folder", Input).value = str(folder)
        await pilot.pause()
        summary = text_of(screen.query_one("#spec-summary"))
        assert "python train.py --epochs 2" in summary and "tiny" in summary
        assert screen.query_one("#gpus", Input).value == "1"
        assert screen.query_one("#time-limit", Input).value == "10m"
        assert screen.query_one("#dataset", Select).is_blank()  # nai.yaml names none
        screen.query_one("#gpus", Input).value = "2"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert app.transfers.pushed == [folder]
        sent = fake.submitted[-1]
        assert sent["spec"]["gpus"] == 2 and sent["spec"]["time_limit"] == "10m"
        assert sent["source"] == "nai.yaml" and sent["code_tree"]
        assert isinstance(app.screen, JobDetailScreen)
        assert app.screen.job is not None and app.screen.job.name == "tiny"
        assert any("Submitted job 10" in n for n in notifications(app))
        await pilot.press("escape")  # back to the jobs, not to the form
        assert app.screen is app.screen_stack[0]


async def test_a_folder_without_nai_yaml_cannot_be_submitted(make_app, fake,
                                                              tmp_path) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.push_screen(SubmitScreen(tmp_path))
        await pilot.pause()
        screen = app.screen
        assert "no nai.yaml" in text_of(screen.query_one("#spec-summary"))
        assert screen.query_one("#submit", Button).disabled
        await pilot.press("ctrl+s")
        assert not fake.submitted
        assert any("Nothing to submit" in n for n in notifications(app))


async def test_a_refused_spec_is_a_notice_and_the_form_stays(make_app, fake,
                                                             tmp_path) -> None:
    from nai_server.protocol import Invalid

    def refuse(**kwargs: object) -> None:
        raise Invalid("nai.yaml line 4: time_limit: '10 parsecs' is not a duration")

    fake.submit = refuse  # type: ignore[method-assign]
    folder = job_folder(tmp_path)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.push_screen(SubmitScreen(folder))
        await pilot.pause()
        app.screen.query_one("#time-limit", Input).value = "10 parsecs"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, SubmitScreen)
        assert not app.screen.query_one("#submit", Button).disabled
        assert any("is not a duration" in n for n in notifications(app))


async def test_pick_the_folder_in_the_tree(make_app, tmp_path) -> None:
    folder = job_folder(tmp_path)
    (tmp_path / "other").mkdir()
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.push_screen(SubmitScreen(tmp_path))
        await settle(pilot)
        await pilot.press("ctrl+o")
        tree = app.screen.query_one("#folder-tree")
        assert [n.label.plain for n in tree.root.children] == ["other", "tiny"]
        await pilot.press("down", "down", "enter")
        await pilot.pause()
        assert app.screen.query_one("#folder", Input).value == str(folder)
        assert app.screen.spec_text == SPEC


async def test_pick_a_dataset_and_keep_nai_yamls_model(make_app, fake, tmp_path) -> None:
    folder = job_folder(tmp_path)
    (folder / "nai.yaml").write_text(SPEC + "model: resnet18-cifar@1\n")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.push_screen(SubmitScreen(folder))
        await settle(pilot)
        screen = app.screen
        dataset = screen.query_one("#dataset", Select)
        model = screen.query_one("#model", Select)
        assert model.value == "resnet18-cifar@1"  # nai.yaml's choice, kept as written
        assert [ref for _, ref in dataset._options if ref is not Select.NULL] == \
            ["cifar10@latest", "imdb-reviews@latest"]
        dataset.value = "cifar10@latest"
        await pilot.press("ctrl+s")
        await settle(pilot)
        sent = fake.submitted[-1]["spec"]
        assert sent["dataset"] == "cifar10@latest" and sent["model"] == "resnet18-cifar@1"


async def test_a_picked_dataset_offers_its_versions(make_app, fake, tmp_path) -> None:
    folder = job_folder(tmp_path)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.push_screen(SubmitScreen(folder))
        await settle(pilot)
        screen = app.screen
        dataset = screen.query_one("#dataset", Select)
        dataset.value = "cifar10@latest"
        await settle(pilot)
        options = [(str(label), ref) for label, ref in dataset._options
                   if ref is not Select.NULL]
        assert [ref for _, ref in options] == [
            "cifar10@latest", "cifar10@2", "cifar10@1", "imdb-reviews@latest"]
        assert ("  cifar10@2 (clean)", "cifar10@2") in options  # with its tag
        assert dataset.value == "cifar10@latest"  # the choice stays
        assert fake.calls.count("registry_entry") == 1
        dataset.value = "cifar10@1"  # an older version, picked from the list
        await settle(pilot)
        assert fake.calls.count("registry_entry") == 1  # read once per name
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert fake.submitted[-1]["spec"]["dataset"] == "cifar10@1"
