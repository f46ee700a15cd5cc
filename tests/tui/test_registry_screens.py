"""The datasets and models screens: the list, an entry's versions, pushing a folder as
a new version and pulling a version into a folder, against the fake server."""

from __future__ import annotations

import dataclasses

from textual.widgets import DataTable, Input
from textual.widgets._footer import FooterKey
from tui_kit import SIZE, notifications, settle, text_of

from nai_tui.tui.ports import PulledFiles
from nai_tui.tui.screens.help import HelpScreen
from nai_tui.tui.screens.prompt import PromptScreen
from nai_tui.tui.screens.registry import RegistryScreen
from nai_tui.tui.screens.registry_push import RegistryPushScreen


def rows(table: DataTable) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def open_datasets(pilot) -> RegistryScreen:
    await settle(pilot)
    await pilot.press("D")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, RegistryScreen) and screen.kind == "dataset"
    return screen


async def test_datasets_list_and_the_selected_ones_versions(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_datasets(pilot)
        assert screen.title == "Datasets"
        listed = rows(screen.query_one("#registry-list", DataTable))
        assert [r[0] for r in listed] == ["cifar10", "imdb-reviews"]
        assert listed[0][1:4] == ["alice", "private", "2 (clean)"]
        assert listed[1][1:3] == ["bob", "everyone"]
        # The first entry's versions show at once, newest first.
        assert "dataset cifar10" in text_of(screen.query_one("#registry-about"))
        versions = rows(screen.query_one("#registry-versions", DataTable))
        assert [v[0] for v in versions] == ["2", "1"]
        assert versions[0][1] == "clean" and versions[0][3] == "3"
        assert versions[0][6] == "#1" and versions[1][6] == "#6"
        # Moving down the list shows the other entry's versions.
        await pilot.press("down")
        await settle(pilot)
        assert screen.entry is not None and screen.entry.name == "imdb-reviews"
        versions = rows(screen.query_one("#registry-versions", DataTable))
        assert [v[0] for v in versions] == ["1"] and versions[0][5] == "bob"
        await pilot.press("escape")
        assert app.screen is app.screen_stack[0]


async def test_push_a_folder_as_the_next_version(make_app, fake, tmp_path) -> None:
    folder = tmp_path / "cifar-v3"
    folder.mkdir()
    (folder / "train.bin").write_bytes(bytes(100))
    (folder / "labels.txt").write_text("cat\ndog\n")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_datasets(pilot)
        await pilot.press("u")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, RegistryPushScreen)
        assert dialog.query_one("#push-name", Input).value == "cifar10"  # the selected one
        dialog.query_one("#push-folder", Input).value = str(folder)
        dialog.query_one("#push-tag", Input).value = "v3"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert app.screen is screen
        assert app.transfers.pushed == [folder]
        v = fake.registry_version("dataset", "cifar10", "v3")
        assert v.version == 3 and v.files == 2 and v.created_by == "alice"
        assert rows(screen.query_one("#registry-list", DataTable))[0][3] == "3 (v3)"
        versions = rows(screen.query_one("#registry-versions", DataTable))
        assert [r[0] for r in versions] == ["3", "2", "1"]
        assert any("cifar10@3 (v3): 2 files" in n for n in notifications(app))

        # The same folder again: the server records nothing, and the notice says so.
        await pilot.press("u")
        await pilot.pause()
        app.screen.query_one("#push-folder", Input).value = str(folder)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert [v.version for v in fake.registry_entry("dataset", "cifar10").versions] == [
            1, 2, 3]
        assert any("cifar10: unchanged, still @3" in n for n in notifications(app))


async def test_push_a_new_dataset_and_a_bad_form_stays_open(make_app, fake,
                                                            tmp_path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "data.npz").write_bytes(b"x" * 10)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_datasets(pilot)
        await pilot.press("u")
        await pilot.pause()
        dialog = app.screen
        dialog.query_one("#push-name", Input).value = "mnist"
        dialog.query_one("#push-folder", Input).value = str(tmp_path / "missing")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is dialog
        assert "is not a folder" in text_of(dialog.query_one("#push-problem"))
        dialog.query_one("#push-folder", Input).value = str(folder)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert fake.registry_entry("dataset", "mnist").owner == {"user": "alice"}
        assert screen.selected_name == "mnist"
        assert rows(screen.query_one("#registry-versions", DataTable))[0][0] == "1"


async def test_pull_a_version_into_a_folder(make_app, fake, tmp_path) -> None:
    app = make_app()
    dest = tmp_path / "data" / "cifar10"
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_datasets(pilot)
        screen.query_one("#registry-versions").focus()
        await pilot.press("down")  # version 1, the older one
        await pilot.press("p")
        await pilot.pause()
        prompt = app.screen
        assert isinstance(prompt, PromptScreen)
        assert prompt.query_one(Input).value.endswith("cifar10")
        prompt.query_one(Input).value = str(dest)
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is screen
        assert sorted(p.name for p in dest.iterdir()) == ["test.bin", "train.bin"]
        assert (dest / "train.bin").stat().st_size == 3000  # version 1's, not 2's
        assert any("cifar10@1: 2 file(s) downloaded" in n for n in notifications(app))


async def test_a_pull_that_kept_local_files_names_them(make_app, tmp_path,
                                                       monkeypatch) -> None:
    app = make_app()
    real = app.transfers.pull

    def keeping(*args: object) -> PulledFiles:  # as nai_tui.pull reports a local edit
        return dataclasses.replace(real(*args), kept=("train.bin",))

    monkeypatch.setattr(app.transfers, "pull", keeping)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_datasets(pilot)
        screen.query_one("#registry-versions").focus()
        await pilot.press("p")
        await pilot.pause()
        app.screen.query_one(Input).value = str(tmp_path / "out")
        await pilot.press("enter")
        await settle(pilot)
        assert any("kept 1 local file(s) that differ from the server's: train.bin" in n
                   for n in notifications(app))


async def test_models_screen_and_switching_from_datasets(make_app, fake) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("M")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RegistryScreen) and screen.kind == "model"
        assert screen.title == "Models"
        assert rows(screen.query_one("#registry-list", DataTable))[0][:4] == \
            ["resnet18-cifar", "alice", "private", "1 (best)"]
        assert rows(screen.query_one("#registry-versions", DataTable))[0][1] == "best"
        app.open_registry("dataset")  # as the palette does: replaces, not stacks
        await settle(pilot)
        assert isinstance(app.screen, RegistryScreen) and app.screen.kind == "dataset"
        assert len(app.screen_stack) == 2


async def test_an_empty_registry_says_how_to_start(make_app, fake) -> None:
    fake._registries.clear()
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_datasets(pilot)
        assert "u pushes a folder" in text_of(screen.query_one("#registry-status"))
        await pilot.press("p")
        assert any("Select a dataset first" in n for n in notifications(app))


async def test_keys_in_help_and_palette_and_help_stays_in_a_narrow_footer(make_app) -> None:
    from nai_tui.tui.palette import NaiCommands

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        # D and M live in help and the palette, so that at 80 columns the footer
        # still has room for the help key.
        shown = {key.description for key in app.screen.query(FooterKey)
                 if key.region.width > 0}
        assert "Help" in shown
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        keys = text_of(app.screen.query_one("#help-keys"))
        assert "Browse the datasets" in keys and "Browse the models" in keys
        await pilot.press("escape")
        titles = [t for t, _, _ in NaiCommands(app.screen).entries()]
        assert "Jobs: Browse the datasets" in titles
        assert not any(t.startswith("Browse ") for t in titles)  # no duplicates
        await pilot.press("D")
        await settle(pilot)
        titles = [t for t, _, _ in NaiCommands(app.screen).entries()]
        assert "Browse models" in titles and "Show dataset imdb-reviews" in titles
        assert "Datasets: Upload a folder as a new version" in titles


async def test_columns_fit_their_cells_from_the_first_frame(make_app) -> None:
    """A list that arrives is drawn with columns as wide as their cells at once, not
    cut to the header's width until Textual next measures them when idle (on a busy
    machine the screen showed `cifa` for `cifar10`)."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_datasets(pilot)
        first = next(iter(screen.entries.values()))
        entries = [*screen.entries.values(),
                   first.model_copy(update={"name": "a-much-longer-dataset-name",
                                            "description": "d" * 60})]
        table = screen.query_one("#registry-list", DataTable)
        screen.on_registry_screen_listed(RegistryScreen.Listed(entries))  # no idle after
        widths = {str(c.label): c.get_render_width(table) - 2 * table.cell_padding
                  for c in table.columns.values()}
        assert widths["NAME"] >= max(len(e.name) for e in entries)
        assert widths["DESCRIPTION"] >= min(40, max(len(e.description) for e in entries))
