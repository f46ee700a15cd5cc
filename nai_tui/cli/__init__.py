"""`nai`: with no arguments the terminal UI; with a command, the batch CLI.

The commands (and the sync machinery they import) are imported only once a command
is given: `nai` alone goes straight to the TUI, which starts faster without them."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable


def _job_id(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"job ids are numbers, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"job ids start at 1, got {number}")
    return number


def tui_server(argv: list[str]) -> tuple[bool, str | None]:
    """(True, --server's value) when `argv` asks for the TUI (no command), told apart
    without building the full parser; (False, None) for anything else, errors and
    --help included, which the full parser handles."""
    quick = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    quick.add_argument("--server", "-s")
    try:
        args, rest = quick.parse_known_args(argv)
    except argparse.ArgumentError:
        return False, None
    return (False, None) if rest else (True, args.server)


class _ShowVersion(argparse.Action):
    """`--version`: this client's version and the API it speaks. Looked up only when
    asked: reading the package's metadata would slow every other command."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0,
                         help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print_version()
        parser.exit()


def print_version() -> None:
    """`nai --version`'s line."""
    from importlib.metadata import PackageNotFoundError, version

    from nai_server.protocol import API_VERSION

    try:
        mine = version("nothingai")
    except PackageNotFoundError:
        mine = "(not installed)"
    print(f"nai {mine} (API {API_VERSION})")


# `add(name, func, help, remote=True, no_json=None)`: one subcommand (see build_parser).
Add = Callable[..., argparse.ArgumentParser]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv` (the plugins' commands are read only if it may need them);
    for any command line when None."""
    from nai_tui.cli.contract import EPILOG, json_flag
    from nai_tui.cli.plugin_commands import add_plugin_commands, command_in
    from nai_tui.cli.registry_commands import add_registry_commands
    from nai_tui.cli.services import add_service_commands
    from nai_tui.cli.usage_command import add_usage_command

    parser = argparse.ArgumentParser(
        prog="nai", description="Run jobs on shared GPU servers. Without a command: the TUI.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", "-s", help="configured server to use (default: the "
                        "default server, else this machine's personal server); `nai submit "
                        "--server auto`: the one where the job starts first")
    parser.add_argument("--version", action=_ShowVersion,
                        help="show the version of nai and of the API it speaks, and exit")
    # dest is not "command": `submit --command` would overwrite it.
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")

    def add(name: str, func: Callable[..., int], help_text: str, *, remote: bool = True,
            no_json: str | None = None) -> argparse.ArgumentParser:
        """A subcommand; it prints JSON with --json, unless `no_json` says why not."""
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func, remote=remote)
        json_flag(p, refuse=no_json)
        return p

    _add_run_commands(add)
    _add_job_commands(add)
    _add_server_command(add)
    _add_personal_commands(add)
    add_registry_commands(sub)
    add_service_commands(sub, add)
    add_usage_command(add)
    _add_completion_command(add)
    add_plugin_commands(add, sub, command_in(argv))  # last: never shadows a built-in
    return parser


def _add_completion_command(add: Add) -> None:
    from nai_tui.cli import completion

    p = add("completion", completion.cmd_completion, "print a shell completion script",
            remote=False, no_json="it prints a shell script")
    p.epilog = completion.EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("shell", choices=completion.SHELLS)


def _add_run_commands(add: Add) -> None:
    """Starting jobs: `submit` a folder, `finetune` a model on a dataset."""
    from nai_tui.cli import commands, id_args, multi_server
    from nai_tui.cli.array_submit import array_indices
    from nai_tui.cli.contract import count, env_pair

    p = add("submit", commands.cmd_submit, "sync a folder and submit it as a job")
    p.add_argument("dir", nargs="?", default=".", help="the job's folder (default: .)")
    p.add_argument("-f", "--file", help="the spec file (default: DIR/nai.yaml)")
    p.add_argument("--gpus", type=count)
    p.add_argument("--dataset")
    p.add_argument("--model")
    p.add_argument("--time-limit", help="e.g. 2h, 30m, 1h30m")
    p.add_argument("--name")
    p.add_argument("--command", help="the command to run (default: from nai.yaml), with "
                   "/bin/sh and the server daemon's PATH: `python` is the server's unless "
                   "nai.yaml has env_setup: login, {conda: NAME} or {venv: PATH}")
    p.add_argument("--env", action="append", type=env_pair, metavar="K=V", help="repeatable")
    p.add_argument("--after", action="append", type=id_args.dependency_ids, metavar="ID[,ID]",
                   help="start once these jobs have ended, however they end (added to "
                   "nai.yaml's after; repeatable)")
    p.add_argument("--after-ok", action="append", type=id_args.dependency_ids,
                   metavar="ID[,ID]", help="start once these jobs have succeeded; if one "
                   "fails, this one is cancelled (added to nai.yaml's after_ok; repeatable)")
    p.add_argument("--array", type=array_indices, metavar="SPEC",
                   help="submit one job per index (0-99, 0-99:10, 0,3,7, or 0-9,20; at most "
                   "10,000): the code is uploaded once, each job gets $NAI_ARRAY_INDEX and "
                   "the name NAME-INDEX; prints one id a line")
    p.add_argument("--dry-run", action="store_true", help="show what would run and when it "
                   "would start, without sending the code or queuing anything; with "
                   "--server auto, where it would go")
    # Also after `submit` (`nai submit --server auto`); SUPPRESS keeps a --server given
    # before the command when none is given after it.
    p.add_argument("--server", "-s", default=argparse.SUPPRESS,
                   help="server to submit to; auto: the one where the job starts first")
    p.add_argument("--yes", action="store_true", help="upload large files (over 50 MB, or "
                   "100 MB together) without asking; without it nai asks at a terminal "
                   "and refuses in a script")
    _add_outcome_options(p)
    multi_server.flags(p)

    p = add("finetune", commands.cmd_finetune, "run a model's own code on a dataset, "
            "starting from its weights ($NAI_MODEL_DIR)")
    p.add_argument("model", metavar="MODEL[@VERSION]")
    p.add_argument("--dataset", required=True, metavar="DATASET[@VERSION]")
    p.add_argument("--command", help="what to run (default: the model version's "
                   "finetune_command metadata)")
    p.add_argument("--gpus", type=count)
    p.add_argument("--time-limit", help="e.g. 2h, 30m, 1h30m")
    p.add_argument("--name", help="the job's name (default: finetune-MODEL)")
    _add_outcome_options(p)


def _add_outcome_options(p: argparse.ArgumentParser) -> None:
    """What happens once a submitted job runs: its outputs as a model, its log followed."""
    from nai_tui.cli.commands import metric_choice

    p.add_argument("--register-model", metavar="NAME",
                   help="on success, make the job's outputs a new version of this model")
    p.add_argument("--register-metric", metavar="METRIC[:min|:max]", type=metric_choice,
                   help="the metric that matters for that version (nai.yaml's "
                   "register_metric): shown first with its best value; :min or :max says "
                   "which way is better when the name does not (loss, error... are min)")
    p.add_argument("--follow", action="store_true",
                   help="stream the log and exit with the job's exit code")
    p.add_argument("--cancel-on-interrupt", action="store_true",
                   help="with --follow: Ctrl-C cancels the job (by default it keeps running)")


def _add_job_commands(add: Add) -> None:
    """Looking at jobs and the server: jobs, show, logs, cancel, pull, metrics, gpus, whoami."""
    from nai_server.protocol import JobState
    from nai_tui.cli import commands, id_args, multi_server
    from nai_tui.cli.contract import count
    from nai_tui.cli.registry_commands import FORCE_HELP

    p = add("jobs", commands.cmd_jobs, "list jobs, newest first")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--all", action="store_true", help="everyone's jobs (default)")
    who.add_argument("--mine", action="store_true", help="only yours")
    p.add_argument("--state", choices=[s.value for s in JobState], metavar="STATE",
                   help=", ".join(s.value for s in JobState))
    p.add_argument("--user")
    p.add_argument("--limit", type=int, default=50,
                   help="how many (above 1000, fetched page by page)")
    p.add_argument("--since", type=commands.since_time, metavar="WHEN",
                   help="submitted since: 2026-11-30, '2026-11-30 14:00' (UTC), or 3d/12h/30m ago")
    p.add_argument("--before", type=_job_id, metavar="ID", help="only jobs older than job ID")
    multi_server.flags(p, multi_server.cmd_jobs)

    p = add("show", commands.cmd_show, "one job in detail")
    p.add_argument("id", type=_job_id)
    p = add("logs", commands.cmd_logs, "a job's output (stdout and stderr)",
            no_json="a log is printed as the job wrote it; `nai show ID --json` for the job")
    p.description = ("A job's output in the order it wrote it: its stdout on stdout and "
                     "its stderr on stderr, as `docker logs` prints them (`nai logs ID "
                     "2>/dev/null` shows its stdout alone). A job its server did not tell "
                     "apart (started by an older server, or on Slurm) prints all on stdout.")
    p.add_argument("id", type=_job_id)
    p.add_argument("-f", "--follow", action="store_true", help="stream until the job ends")
    p.add_argument("-n", "--tail", type=count, metavar="N", help="only the last N lines "
                   "(read from the log's end, however long it is); with -f, then follow")
    p = add("cancel", commands.cmd_cancel, "cancel jobs: ids and ranges (12 14 20-25); "
            "one that already ended is said so, not an error")
    p.add_argument("ids", type=id_args.job_ids, nargs="+", metavar="ID|A-B")
    p = add("pull", commands.cmd_pull, "download a finished job's outputs")
    p.add_argument("id", type=_job_id)
    p.add_argument("--to", help="destination folder (default: ./nai-outputs/ID)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p = add("metrics", commands.cmd_metrics, "a job's metrics lines")
    p.add_argument("id", type=_job_id)
    commands.metrics_flags(p)
    multi_server.flags(add("gpus", commands.cmd_gpus, "the server's GPUs and who uses them"),
                       multi_server.cmd_gpus)
    add("whoami", commands.cmd_whoami, "who the server thinks you are")


def _add_server_command(add: Add) -> None:
    """`nai server VERB`: the configured servers."""
    from nai_tui.cli import setup_commands
    from nai_tui.cli.contract import json_flag
    from nai_tui.config import TRANSPORTS

    p = add("server", setup_commands.cmd_server, "configured servers", remote=False)
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    s = verbs.add_parser("add", help="add a server: ssh://user@host[:port], an ssh alias, "
                         "or local")
    s.add_argument("name")
    s.add_argument("url")
    s.add_argument("--transport", choices=TRANSPORTS, default="ssh")
    s.add_argument("--remote-command", default="nai-server dial-stdio",
                   help="how to reach the daemon on the server")
    s.add_argument("--default", action="store_true", help="make it the default")
    json_flag(s, refuse="`nai server add` prints no data")
    for verb, text, aliases in (("remove", "forget a server (also: rm)", ["rm"]),
                                ("default", "make a server the default", [])):
        s = verbs.add_parser(verb, help=text, aliases=aliases)
        s.add_argument("name")
        json_flag(s, refuse=f"`nai server {verb}` prints no data")
    s = verbs.add_parser("trust", help="accept a server's SSH host key (shown first)",
                         description="Show the server's SSH host key and record it in nai's "
                         "known_hosts. At a terminal nai asks; elsewhere it needs --fingerprint "
                         "(checked against the key) or --yes.")
    s.add_argument("name")
    json_flag(s, refuse="`nai server trust` prints no data")
    vouch = s.add_mutually_exclusive_group()
    vouch.add_argument("--fingerprint", metavar="SHA256:...",
                       help="trust the key only if its fingerprint is this one")
    vouch.add_argument("--yes", "-y", action="store_true",
                       help="trust the key shown without asking")
    verbs.add_parser("list", help="list servers (the default)").add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def _add_personal_commands(add: Add) -> None:
    """A personal server on this machine: up, down, and the demo that uses one."""
    from nai_tui.cli import setup_commands as setup

    p = add("up", setup.cmd_up, "start a personal nai-server on this machine", remote=False,
            no_json="`nai up` prints no data")
    p.add_argument("--fake-gpus", type=int, metavar="N", help="pretend to have N GPUs")
    setup.place_flags(p, "where it keeps its database, blobs and jobs")
    p = add("down", setup.cmd_down, "stop the personal nai-server", remote=False,
            no_json="`nai down` prints no data")
    setup.place_flags(p)
    p = add("demo", setup.cmd_demo, "run an example job end to end on a personal server",
            remote=False, no_json="`nai demo` shows a job's log, which is not JSON")
    p.add_argument("dir", nargs="?", help="job folder (default: a small regression that needs "
                   "only Python)")
    p.add_argument("--to", help="where to put the outputs (default: ./nai-outputs/ID)")
    p.add_argument("--fake-gpus", type=int, metavar="N")
    p.add_argument("--keep", action="store_true", help="leave the personal server running")


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    tui, server = tui_server(args_list)
    if tui:
        return run_tui(server)
    if args_list == ["--version"]:  # needs no parser: skip importing every command's code
        print_version()
        raise SystemExit(0)  # as argparse's action does
    from nai_server.protocol import NaiError
    from nai_tui.cli import commands, contract, multi_server
    from nai_tui.cli.output import err
    from nai_tui.config import ClientConfig

    parser = build_parser(args_list)
    args, unknown = parser.parse_known_args(args_list)
    if unknown:
        contract.refuse_unknown(parser, args, unknown, args_list)
    contract.check_json(parser, args)
    if args.subcommand is None:
        return run_tui(args.server)
    if args.subcommand == "server" and args.verb is None:
        args.verb = "list"
    try:
        if not args.remote:
            return int(args.func(args))
        if multi_server.wanted(args):
            return multi_server.run(args)
        entry = ClientConfig.load().choose(args.server)
        with commands.connect(entry) as client:
            return int(args.func(args, client))
    except NaiError as exc:
        err(str(exc))
        return contract.exit_status(exc)
    except KeyboardInterrupt:
        return contract.INTERRUPTED
    except BrokenPipeError:  # `nai jobs | head`
        return 0


def run_tui(server: str | None) -> int:
    # Importing the TUI allocates much and frees little: collecting meanwhile costs
    # ~50 ms of its start-up. After it, what was imported stays out of the
    # collector's sight (frozen), so later full collections do not walk it either.
    gc.disable()
    try:
        from nai_tui.tui.app import run
    except ImportError:
        from nai_tui.cli.output import err

        err("the terminal UI is not available in this build; use `nai --help` for commands")
        return 2
    finally:
        gc.freeze()
        gc.enable()
    return run(server)

