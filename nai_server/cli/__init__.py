"""`nai-server`: run the daemon, check the set-up, and the hidden SSH relay."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nai_server import __version__
from nai_server.paths import find_socket

if TYPE_CHECKING:
    from nai_server.config import ServerConfig

# The rest (config, pydantic, the daemon) is imported by the commands that need it:
# `dial-stdio` starts for every SSH connection, and they cost it 0.14 s each time.


def _config_from(args: argparse.Namespace) -> ServerConfig:
    from nai_server.config import load_config

    return load_config(
        args.config,
        mode="personal" if args.personal else None,
        state_dir=args.state_dir,
        socket=args.socket,
        fake_gpus=args.fake_gpus,
    )


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config file (see config.example.yaml)")
    p.add_argument("--personal", action="store_true",
                   help="one-person server run as yourself: no root, state under XDG dirs")
    p.add_argument("--state-dir", type=Path, help="where the database, blobs and jobs live")
    p.add_argument("--socket", type=Path, help="unix socket of the API")
    p.add_argument("--fake-gpus", type=int, metavar="N",
                   help="pretend there are N GPUs (no NVIDIA driver needed)")


def cmd_run(args: argparse.Namespace) -> int:
    from nai_server import daemon
    from nai_server.store.atomic import StateUnreadable

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _config_from(args)
    if not config.personal and os.getuid() != 0:
        print("nai-server: multi-user mode runs as root (it starts jobs as their owners); "
              "use --personal to run a server for yourself alone", file=sys.stderr)
        return 2
    try:
        daemon.run(config, burst=args.burst)
    except (StateUnreadable, daemon.DaemonError) as exc:
        print(f"nai-server: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from nai_server.cli.check import run_check

    return run_check(_config_from(args), as_json=args.json)


def cmd_dial_stdio(args: argparse.Namespace) -> int:
    from nai_server.cli import dial_stdio

    return dial_stdio.run(find_socket(args.socket))


def cmd_simulate(args: argparse.Namespace) -> int:
    from nai_server.cli import simulate

    return simulate.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nai-server", description="The nai daemon for a shared GPU server.")
    parser.add_argument("--version", action="version", version=f"nai-server {__version__}")
    # The metavar lists the public commands only: dial-stdio is for SSH clients.
    sub = parser.add_subparsers(dest="command", metavar="{run,check,simulate}", required=True)

    run = sub.add_parser("run", help="run the daemon in the foreground")
    _add_config_flags(run)
    run.add_argument("--burst", action="store_true",
                     help="exit once nothing is queued or running")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="check config, paths, GPUs and the daemon")
    _add_config_flags(check)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=cmd_check)

    simulate = sub.add_parser("simulate", help="replay a job trace under scheduling policies")
    simulate.add_argument("--trace", type=Path, required=True,
                          help="CSV: job_id,user,submit_time,duration,num_gpus,status,time_limit")
    simulate.add_argument("--gpus", type=int, required=True, help="GPUs of the simulated server")
    simulate.add_argument("--policy", action="append",
                          help="policy to replay; repeat for several; NAME+preempt makes every "
                               "job preemptible; fifo always runs as the baseline")
    simulate.add_argument("--json", action="store_true", help="machine-readable output")
    simulate.set_defaults(func=cmd_simulate)

    dial = sub.add_parser("dial-stdio")
    dial.add_argument("--socket", type=Path)
    dial.set_defaults(func=cmd_dial_stdio)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from nai_server.protocol import NaiError  # not imported up front (see above)

        if not isinstance(exc, NaiError):
            raise
        print(f"nai-server: {exc}", file=sys.stderr)
        return 2

