"""What scripts may rely on: `nai`'s exit statuses and its `--json` flag.

Every command that prints data takes `--json`; one whose output is not data (a log, a
shell script, nothing at all) refuses it as a usage mistake (status 2) rather than
ignoring it, so a script never parses a table it took for JSON."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nai_server.protocol import Forbidden, Invalid, NaiError, NotFound, Unauthorized

OK, ERROR, USAGE, NOT_FOUND, NOT_ALLOWED = 0, 1, 2, 3, 4
# `nai pull` (and `nai dataset|model pull`) finished, but kept local files that differ
# from the server's copy: the folder is not the version asked for. Not an error (1),
# and not "not found" (3): a script should not train on it unawares, nor mistake it.
KEPT = 5
TIMED_OUT = 124  # as timeout(1): the followed job hit its time limit
INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

EPILOG = f"""\
exit status:
  {OK}    ok
  {ERROR}    an error; the message on stderr says what to do
  {USAGE}    a usage mistake (unknown option, bad value, --json where it means nothing)
  {NOT_FOUND}    not found: the server knows no such job, dataset, model or version
  {NOT_ALLOWED}    not allowed: login or permission refused, or an SSH host key unknown
       or changed (`nai server trust SERVER`)
  {KEPT}    pull: local files that differ from the server's were kept (--force)
  {TIMED_OUT}  --follow: the job hit its time limit
  {INTERRUPTED}  interrupted (Ctrl-C)
  with --follow (submit, finetune): the job's own exit code"""


class UsageMistake(Invalid):
    """A mistake on the command line that argparse cannot see (a file that is not
    there, a value of the wrong shape): `nai` exits USAGE for it, as for argparse's."""


def count(text: str) -> int:
    """An argparse type: a count from 0 (`--gpus`)."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number from 0, got {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"a whole number from 0, got {number}")
    return number


def env_pair(text: str) -> str:
    """An argparse type: `KEY=VALUE` (`--env`), as given."""
    key, eq, _ = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. --env SEED=7")
    return text


def exit_status(exc: NaiError) -> int:
    """The status `nai` exits with for an error it reports."""
    if isinstance(exc, UsageMistake):
        return USAGE
    if isinstance(exc, NotFound):
        return NOT_FOUND
    if isinstance(exc, (Unauthorized, Forbidden)):
        return NOT_ALLOWED
    # Host-key and login errors come from the SSH modules; unless they were imported,
    # the error cannot be one of theirs (and `nai` need not pay for importing paramiko).
    hostkeys = sys.modules.get("nai_tui.remote.hostkeys")
    if hostkeys is not None and isinstance(
            exc, (hostkeys.UnknownHostKey, hostkeys.HostKeyChanged, hostkeys.LoginFailed)):
        return NOT_ALLOWED
    return ERROR


class _RefuseJson(argparse.Action):
    """`--json` where the output is not data: a usage error that says why."""

    def __init__(self, option_strings: list[str], dest: str, why: str = "",
                 **kwargs: Any) -> None:
        # No default: a refused flag never overwrites the `--json` a command above it
        # took (`nai server --json add ...` is caught by `check_json`).
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)
        self.why = why

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        parser.error(f"--json: {self.why}")


def json_flag(p: argparse.ArgumentParser, refuse: str | None = None) -> None:
    """Give the command `--json`; with `refuse`, `--json` is a usage error saying it."""
    if refuse is None:
        p.add_argument("--json", action="store_true", default=False, help="print JSON")
    else:
        p.add_argument("--json", action=_RefuseJson, why=refuse)


# (command, the option --json cannot go with, why): refused after parsing.
_CLASHES = (
    ("submit", "follow", "with --follow the job's log follows, which is not JSON"),
    ("finetune", "follow", "with --follow the job's log follows, which is not JSON"),
    ("metrics", "csv", "give --json or --csv, not both"),
    ("dataset", "follow", "with --follow the job's log follows, which is not JSON"),
)


def check_json(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse `--json` where the parsed command line makes it meaningless."""
    if not getattr(args, "json", False):
        return
    if args.subcommand == "server" and args.verb not in (None, "list"):
        parser.error(f"--json: `nai server {args.verb}` prints no data; "
                     f"`nai server list --json` lists the servers")
    for command, option, why in _CLASHES:
        if args.subcommand == command and getattr(args, option, False):
            parser.error(f"--json: {why}")


def refuse_unknown(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   unknown: list[str], argv: list[str]) -> None:
    """Exit with status 2 for arguments no parser took (`nai submit --folow .`): with the
    usage of the command they were given to, not `nai`'s, and the option nearest each
    mistyped one."""
    import difflib

    owner = _owner(parser, args, argv, unknown[0])
    options = [o for a in owner._actions for o in a.option_strings]
    hints = []
    for word in unknown:
        if word.startswith("-"):
            near = difflib.get_close_matches(word.split("=")[0], options, n=1, cutoff=0.6)
            if near:
                hints.append(f"{word}: did you mean {near[0]}?")
    owner.error(f"unrecognized arguments: {' '.join(unknown)}" +
                "".join(f"; {h}" for h in hints) +
                f" (`{owner.prog} --help` lists what it takes)")


def _owner(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str],
           word: str) -> argparse.ArgumentParser:
    """The deepest command given (`nai server add ...`) whose own words come before
    `word` in `argv`: `nai --bogus jobs` is `nai`'s mistake, not `nai jobs`'."""
    at = argv.index(word) if word in argv else len(argv)
    owner, start = parser, 0
    while True:
        sub = next((a for a in owner._actions
                    if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, sub.dest, None) if sub is not None else None
        if sub is None or name not in sub.choices:
            return owner
        # The command's word, not an option's value that reads the same (`-s jobs jobs`).
        found = next((i for i in range(start, len(argv)) if argv[i] == name and not (
            i > start and getattr(owner._option_string_actions.get(argv[i - 1]),
                                  "nargs", 0) != 0)), None)
        if found is None or found > at:
            return owner
        owner, start = sub.choices[name], found + 1

