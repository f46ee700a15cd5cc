"""`nai` reads the client commands' entry points only when the command line may need
them: not for a built-in command (bench/client_commands.py measures what that saves),
but for a command it does not know, for `--help` and for `nai completion`, which list
every command."""

from __future__ import annotations

from typing import Any

import pytest

from nai_tui.cli import build_parser, plugin_commands
from nai_tui.cli.plugin_commands import command_in


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The groups whose entry points were read."""
    seen: list[str] = []

    def entry_points(group: str, **_: Any) -> list[Any]:
        seen.append(group)
        return []
    monkeypatch.setattr(plugin_commands.metadata, "entry_points", entry_points)
    return seen


@pytest.mark.parametrize("argv", [["jobs"], ["-s", "lab", "jobs", "--json"],
                                  ["--server=lab", "submit", "."], ["plugins"],
                                  ["notify", "list"], ["dataset", "annotate", "--help"]])
def test_a_built_in_command_reads_no_entry_point(reads: list[str], argv: list[str]) -> None:
    build_parser(argv)
    assert reads == []


@pytest.mark.parametrize("argv", [["hello", "--to", "lab"], ["-s", "lab", "hello"],
                                  ["--help"], ["completion", "bash"], ["--bogus", "x"]])
def test_what_may_name_or_list_a_plugin_command_reads_them(reads: list[str],
                                                           argv: list[str]) -> None:
    build_parser(argv)
    assert reads == [plugin_commands.GROUP]


def test_a_parser_for_any_command_line_reads_them(reads: list[str]) -> None:
    build_parser()
    assert reads == [plugin_commands.GROUP]


def test_command_in() -> None:
    assert command_in(["-s", "lab", "jobs", "-a"]) == "jobs"
    assert command_in(["--server", "lab", "hello"]) == "hello"
    assert command_in(["--help"]) is None
    assert command_in([]) is None
    assert command_in(None) is None
