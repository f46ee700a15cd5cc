"""What keeps start-up short: `nai` alone is told apart from commands without importing
them, and the footer is rebuilt only when the keys it shows change."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.widgets._footer import FooterKey
from tui_kit import SIZE, settle

from nai_server.testing import imports_of
from nai_tui import cli
from nai_tui.testing import FakeServerClient
from nai_tui.tui.app import NaiApp
from nai_tui.tui.widgets.footer import Footer


@pytest.mark.parametrize(("argv", "expected"), [
    ([], (True, None)),
    (["-s", "lab"], (True, "lab")),
    (["--server=lab"], (True, "lab")),
    (["--server", "lab", "jobs"], (False, None)),
    (["jobs"], (False, None)),
    (["-h"], (False, None)),
    (["--server"], (False, None)),  # the full parser says what is wrong
    (["-s", "lab", "--bogus"], (False, None)),
])
def test_the_tui_is_told_apart_from_commands(argv: list[str],
                                             expected: tuple[bool, str | None]) -> None:
    assert cli.tui_server(argv) == expected


def test_main_opens_the_tui_without_importing_the_commands() -> None:
    printed, heavy, _ = imports_of(
        "from nai_tui import cli\ncli.run_tui = lambda server: print(server) or 0\n"
        "cli.main(['-s', 'lab'])",
        ["nai_tui.cli.commands", "nai_tui.sync.push", "nai_tui.cli.registry_commands", "textual"])
    assert printed == ["lab"] and heavy == []


def keys(app: NaiApp) -> list[str]:
    return [key.description for key in app.screen.query_one(Footer).query(FooterKey)]


async def test_the_footer_is_rebuilt_only_when_its_keys_change(
        make_app: Callable[..., NaiApp], fake: FakeServerClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rebuilt: list[str] = []
    original = Footer.recompose

    async def recompose(self: Footer) -> None:
        rebuilt.append(self.screen.__class__.__name__)
        await original(self)

    monkeypatch.setattr(Footer, "recompose", recompose)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "Submit" in keys(app) and "Reconnect" not in keys(app)
        rebuilt.clear()
        for _ in range(3):
            app.refresh_bindings()
        await settle(pilot)
        assert rebuilt == []  # the same keys
        fake.fail = "Connection reset by peer"
        await pilot.press("r")
        await settle(pilot)
        assert app.connection == "lost"
        assert rebuilt == ["JobsScreen"]  # R Reconnect appears
        assert "Reconnect" in keys(app)


async def test_start_up_asks_for_the_queue_once_with_the_real_filters(
        make_app: Callable[..., NaiApp], fake: FakeServerClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first poll starts as soon as the app connects, even before the jobs screen
    is mounted; neither the screen's first showing nor its filters' first Changed
    events ask again, and no poll sends a filter that is not set yet."""
    asked: list[tuple[str, str | None]] = []
    every = fake.jobs

    def jobs(**query):  # type: ignore[no-untyped-def]
        asked.append((query.get("scope", "all"), query.get("state")))
        return every(**query)

    monkeypatch.setattr(fake, "jobs", jobs)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        newest = [a for a in asked if a[1] is None]
        assert newest == [("all", None)], asked  # one poll: its newest page, once
        assert all(scope in ("all", "mine") for scope, _ in asked), asked
        assert fake.calls.count("gpus") == 1
