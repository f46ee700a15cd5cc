"""`nai plugins`, `nai notify`, and the commands that installed plugins add to `nai`
(client commands).

A client command is a distribution on the user's machine with an entry point in the
`nai.client_commands` group (the contract is in nai_server/plugins/contracts.py): the
entry point's name is the subcommand, its object has

    help: str                                   one line for `nai --help`
    run(args, client) -> int                    the command (client: the chosen server)
    add_arguments(parser) -> None               optional: its arguments (argparse)
    remote: bool = True                         False: run(args) gets no client
    json: bool = False                          True: it honours --json

A plugin that fails to load, clashes with a built-in command, or whose arguments cannot
be added prints one warning line on stderr and is skipped; `nai` works on. One whose
`run` raises ends with an error line (status 1), not a traceback.

The entry points are read only when the command asked for may be one of them (not a
built-in), or for a listing of every command (`nai --help`, `nai completion`): reading
every installed distribution's metadata would slow each built-in command
(bench/client_commands.py measures it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from nai_server.protocol import NaiError
from nai_tui.cli.contract import json_flag
from nai_tui.cli.notify_command import add_notify_command
from nai_tui.cli.output import emit_json, err, table
from nai_tui.remote.client import ServerClient

GROUP = "nai.client_commands"
LISTS_COMMANDS = frozenset({"completion"})  # built-ins that need the plugins' commands too


def command_in(argv: list[str] | None) -> str | None:
    """The subcommand `argv` names (after `--server X`), if it names one; None for
    none, for `--help`, or when it cannot be told without the full parser."""
    if argv is None:
        return None
    quick = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    quick.add_argument("--server", "-s")
    try:
        _, rest = quick.parse_known_args(argv)
    except argparse.ArgumentError:
        return None
    return rest[0] if rest and not rest[0].startswith("-") else None


def cmd_plugins(args: argparse.Namespace, client: ServerClient) -> int:
    rows = client.plugins()
    if args.json:
        emit_json(rows)
        return 0
    print(table([(p.name, p.kind, p.version or "-", p.state) for p in rows],
                ("NAME", "KIND", "VERSION", "STATE")))
    return 0


def _guarded(name: str, run: Callable[..., Any]) -> Callable[..., int]:
    def call(*args: Any) -> int:
        try:
            return int(run(*args) or 0)
        except (NaiError, KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:
            err(f"plugin command {name!r} failed: {type(exc).__name__}: {exc}")
            return 1
    return call


def _load(ep: metadata.EntryPoint, sub: Any) -> None:
    command = ep.load()
    run = getattr(command, "run", None)
    if not callable(run):
        raise TypeError("it has no run(args, client) function")
    adder = getattr(command, "add_arguments", None)
    wants_json = bool(getattr(command, "json", False))
    if adder is not None:  # tried on a scratch parser first: a failure adds nothing
        scratch = argparse.ArgumentParser(prog=f"nai {ep.name}", add_help=False)
        json_flag(scratch)
        adder(scratch)
    dist = ep.dist.name if ep.dist is not None else "a plugin"
    help_text = str(getattr(command, "help", "") or f"a command from {dist}")
    p = sub.add_parser(ep.name, help=help_text, description=help_text)
    p.set_defaults(func=_guarded(ep.name, run), remote=bool(getattr(command, "remote", True)))
    json_flag(p, refuse=None if wants_json else f"`nai {ep.name}` (from {dist}) prints no JSON")
    if adder is not None:
        adder(p)


def add_plugin_commands(add: Callable[..., argparse.ArgumentParser], sub: Any,
                        wanted: str | None = None) -> None:
    """`nai plugins`, then each installed client command (after the built-in ones),
    unless the command `wanted` is a built-in one that does not list the others."""
    add("plugins", cmd_plugins, "the plugins the server offers (dataset processors, "
        "annotators, submit rules, notifiers) and whether they run")
    add_notify_command(sub)
    if wanted in sub.choices and wanted not in LISTS_COMMANDS:
        return  # no entry point read: a plugin never shadows a built-in anyway
    try:
        found = sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name)
    except Exception as exc:  # a broken metadata file must not break nai
        print(f"nai: warning: client command plugins not loaded: {exc}", file=sys.stderr)
        return
    for ep in found:
        if ep.name in sub.choices:
            print(f"nai: warning: plugin command {ep.name!r} ({ep.value}) is skipped: nai "
                  f"has a command of that name", file=sys.stderr)
            continue
        try:
            _load(ep, sub)
        except (Exception, SystemExit) as exc:
            why = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            print(f"nai: warning: plugin command {ep.name!r} ({ep.value}) is broken and "
                  f"skipped: {why}", file=sys.stderr)
