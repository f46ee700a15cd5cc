"""The submit form's name, command and env fields: prefilled from nai.yaml, sent as
overrides only when changed, env added to nai.yaml's, a malformed env refused."""

from __future__ import annotations

from textual.widgets import Input
from tui_kit import SIZE, notifications, settle

from nai_tui.tui.screens.submit import SubmitScreen, env_pairs

SPEC = "name: tiny\ncommand: python train.py\ngpus: 1\ntime_limit: 10m\nenv:\n  SEED: '1'\n"


async def open_form(pilot, tmp_path) -> SubmitScreen:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "nai.yaml").write_text(SPEC)
    await settle(pilot)
    await pilot.press("n")
    screen = pilot.app.screen
    assert isinstance(screen, SubmitScreen)
    screen.query_one("#folder", Input).value = str(folder)
    await pilot.pause()
    return screen


async def test_name_command_and_env_go_with_the_submit(make_app, fake, tmp_path) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_form(pilot, tmp_path)
        assert screen.query_one("#name", Input).value == "tiny"
        assert screen.query_one("#command", Input).value == "python train.py"
        assert screen.overrides() == {}  # nothing changed: nothing overridden
        screen.query_one("#name", Input).value = "tiny-lr3"
        screen.query_one("#command", Input).value = "python train.py --lr 3e-4"
        screen.query_one("#env", Input).value = 'LR=3e-4 NOTE="two words"'
        await pilot.press("ctrl+s")
        await settle(pilot)
        sent = fake.submitted[-1]["spec"]
        assert sent["name"] == "tiny-lr3" and sent["command"] == "python train.py --lr 3e-4"
        # sent as an override, which the server adds to nai.yaml's env (apply_overrides)
        assert sent["env"] == ["LR=3e-4", "NOTE=two words"]


async def test_a_malformed_env_is_refused_in_the_form(make_app, fake, tmp_path) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_form(pilot, tmp_path)
        before = len(fake.submitted)
        screen.query_one("#env", Input).value = "JUSTAWORD"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert len(fake.submitted) == before and isinstance(app.screen, SubmitScreen)
        assert any("'JUSTAWORD' is not KEY=VALUE" in n for n in notifications(app))


def test_env_pairs() -> None:
    assert env_pairs("") == []
    assert env_pairs("A=1 B='x y'") == ["A=1", "B=x y"]
