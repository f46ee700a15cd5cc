"""Setting up where jobs run: the configured servers (`nai server`), a personal server on
this machine (`nai up`, `nai down`), and the demo that runs a job on one (`nai demo`).

As the batch commands (nai_tui.cli.commands): stdout carries data, notes go to stderr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from nai_server.protocol import NaiError, TreeInfo
from nai_tui.cli import commands, local
from nai_tui.cli.contract import KEPT
from nai_tui.cli.output import emit_json, note, table
from nai_tui.config import (
    PERSONAL,
    ClientConfig,
    ServerEntry,
    config_dir,
    personal_socket,
    personal_state,
)
from nai_tui.sync import push as sync
from nai_tui.sync.pull import PullResult

# --- servers ------------------------------------------------------------------------


def cmd_server(args: argparse.Namespace) -> int:
    config = ClientConfig.load()
    if args.verb == "add":
        was_personal = config.default in (None, PERSONAL) and PERSONAL not in config.servers
        config.add(ServerEntry(args.name, args.url, args.transport, args.remote_command),
                   make_default=args.default)
        config.save()
        default = config.default == args.name
        back = (f"; `nai -s {PERSONAL} ...` still reaches this machine's personal server, "
                f"`nai server default {PERSONAL}` makes it the default again"
                if default and was_personal and args.name != PERSONAL else "")
        note(f"added server {args.name} ({args.url})" + (", the default" if default else "")
             + back)
    elif args.verb in ("remove", "rm"):
        config.remove(args.name)
        config.save()
    elif args.verb == "default":
        config.get(args.name)
        config.default = args.name
        config.save()
    elif args.verb == "trust":
        return _trust(config.get(args.name), yes=args.yes, expected=args.fingerprint)
    else:
        _list_servers(config, as_json=args.json)
    return 0


def _list_servers(config: ClientConfig, *, as_json: bool) -> None:
    """The servers `-s` takes: the built-in `local` first (unless a configured server of
    that name stands in), the default marked."""
    default = config.default or PERSONAL  # as choose() picks without --server
    entries = ([] if PERSONAL in config.servers else [config.get(PERSONAL)]) \
        + list(config.servers.values())
    if as_json:
        emit_json([{"name": s.name, "default": s.name == default, **s.to_dict(),
                    "transport": s.transport, "builtin": s.name not in config.servers}
                   for s in entries])
        return
    rows = [[("* " if s.name == default else "  ") + s.name,
             s.url if s.name in config.servers else f"{s.url} (built in: `nai up`)",
             s.transport if s.name in config.servers else "-"] for s in entries]
    print(table(rows, ["  NAME", "URL", "TRANSPORT"]))


def _trust(entry: ServerEntry, *, yes: bool, expected: str | None) -> int:
    """Record the server's host key once someone vouched for it: the fingerprint given
    (`--fingerprint`), `--yes`, or a person answering at a terminal. Never silently."""
    from nai_tui.remote import transports

    keytype, key, fingerprint = transports.fetch_host_key(entry.url, name=entry.name)
    note(f"{entry.url} presents {keytype} {fingerprint}")
    if expected is not None:
        if not transports.same_fingerprint(expected, fingerprint):
            raise NaiError(
                f"{entry.name}: not trusted: the key's fingerprint is {fingerprint}, not "
                f"{expected}. Someone could be intercepting the connection; ask the "
                f"server's admin (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`)")
    elif not yes:
        if not sys.stdin.isatty():
            raise NaiError(
                f"{entry.name}: not trusted: no terminal to ask whether this fingerprint is "
                f"the server's. Check it with the server's admin, then run `nai server "
                f"trust {entry.name} --fingerprint {fingerprint}` (or `--yes`)")
        if input("trust this key? [y/N] ").strip().lower() != "y":
            note("not trusted")
            return 1
    transports.trust_host_key(entry.url, config_dir() / "known_hosts", key=key)
    note(f"trusted; it is kept in {config_dir() / 'known_hosts'}")
    return 0


# --- the quickstart -----------------------------------------------------------------


def place_flags(p: argparse.ArgumentParser, state: str | None = None) -> None:
    """`--socket` (and, given what it is for, `--state-dir`) of `nai up` / `nai down`."""
    if state is not None:
        p.add_argument("--state-dir", type=Path, help=f"{state} (default: "
                       f"{personal_state()})")
    p.add_argument("--socket", type=Path, help=f"the server's unix socket (default: "
                   f"{personal_socket()})")


def cmd_up(args: argparse.Namespace) -> int:
    pid, started = local.up(fake_gpus=args.fake_gpus, sock=args.socket, state=args.state_dir)
    elsewhere = args.socket is not None and args.socket != personal_socket()
    down = f"nai down --socket {args.socket}" if elsewhere else "nai down"
    note(f"personal nai-server {'started' if started else 'already running'} (pid {pid}); "
         f"`{down}` stops it")
    if elsewhere:
        note(f"to use it: `nai server add NAME local:{args.socket}`, then `nai -s NAME ...`")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stopped = local.down(args.socket)
    note("personal nai-server stopped" if stopped else "no personal nai-server running")
    return 0


def _demo_folder(into: Path) -> Path:
    """The demo job (`nai_tui.demo_job`, standard library only) in a folder, run by
    this Python: it needs nothing that a plain `pip install` does not bring."""
    from nai_tui import demo_job

    (into / "train.py").write_bytes(Path(demo_job.__file__).read_bytes())
    (into / commands.SPEC_FILE).write_text(demo_job.spec_yaml(sys.executable))
    return into


def _report_demo_outputs(job_id: int, tree: TreeInfo, result: PullResult,
                         dest: Path, *, stopping: bool) -> int:
    """List the job's outputs as pulled into `dest` (never other files already there),
    and the ones kept as they were, as `nai pull` does: it then exits EXIT_KEPT."""
    kept = {k.path: k.reason for k in result.kept}
    pulled = sorted(e.path for e in tree.entries if e.path not in kept)
    files = f"{len(pulled)} file" + ("" if len(pulled) == 1 else "s")
    note(f"outputs of job {job_id} ({files}) are in {dest}:")
    for path in pulled:
        print(dest / path)
    for path, reason in sorted(kept.items()):
        note(f"not overwritten: {dest / path} ({reason}); "
             + ("`nai up`, then " if stopping else "")
             + f"`nai pull {job_id} --to {dest} --force` replaces it with the job's")
    return KEPT if kept else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start a personal server if needed, run an example job end to end, pull outputs."""
    with tempfile.TemporaryDirectory(prefix="nai-demo-") as scratch:
        folder = Path(args.dir) if args.dir else _demo_folder(Path(scratch))
        return _demo(args, folder)


def _demo(args: argparse.Namespace, folder: Path) -> int:
    pid, started = local.up(fake_gpus=args.fake_gpus)
    note(f"personal nai-server {'started' if started else 'running'} (pid {pid})")
    entry = ServerEntry("local", "local")
    code = 1
    try:
        # commands.connect: where tests replace it
        with commands.connect(entry) as client:
            job_id = commands.submit_folder(client, folder).id
            note(f"job {job_id} submitted; its log follows")
            code = commands.follow(client, job_id)
            dest = Path(args.to) if args.to else Path.cwd() / "nai-outputs" / str(job_id)
            if code == 0:
                tree = client.outputs(job_id)
                result = sync.pull(client, tree, dest, cache=commands.hash_cache())
                code = _report_demo_outputs(job_id, tree, result, dest,
                                            stopping=started and not args.keep)
    finally:
        if started and not args.keep:
            local.down()
            note("personal nai-server stopped (nai demo --keep leaves it running)")
    return code
