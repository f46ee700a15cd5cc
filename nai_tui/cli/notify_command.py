"""`nai notify`: be told of your own jobs' events by a notifier the server offers.

    nai notify add webhook https://hooks.example/T0 [--on failed,succeeded]
    nai notify list
    nai notify rm ID
"""

from __future__ import annotations

import argparse
from typing import Any

from nai_server.protocol.notify import NOTIFY_EVENTS
from nai_tui.cli.contract import UsageMistake, json_flag
from nai_tui.cli.output import emit_json, note, table
from nai_tui.remote.client import ServerClient


def _events(text: str) -> list[str]:
    events = [e.strip() for e in text.split(",") if e.strip()]
    unknown = [e for e in events if e not in NOTIFY_EVENTS]
    if not events or unknown:
        raise UsageMistake(f"--on: some of {','.join(NOTIFY_EVENTS)}, comma-separated")
    return events


def cmd_notify(args: argparse.Namespace, client: ServerClient) -> int:
    if args.action == "add":
        sub = client.notify_add(args.via, args.target, _events(args.on))
        if args.json:
            emit_json(sub)
        else:
            print(sub.id)
        note(f"{sub.via} will tell {sub.target} when your jobs {' or '.join(sub.events)}")
        return 0
    if args.action == "rm":
        sub = client.notify_remove(args.id)
        if args.json:
            emit_json(sub)
        note(f"subscription {sub.id} ({sub.via} {sub.target}) removed")
        return 0
    subs = client.notify_list()
    if args.json:
        emit_json(subs)
    else:
        print(table([(s.id, s.via, ",".join(s.events), s.target) for s in subs],
                    ("ID", "VIA", "EVENTS", "TARGET")))
    return 0


def add_notify_command(sub: Any) -> None:
    top = sub.add_parser("notify", help="be told when your jobs start, succeed or fail",
                         description="Be told of your own jobs' events by a notifier the "
                         "server offers (`nai plugins`); nobody else's jobs are ever sent.")
    top.set_defaults(func=cmd_notify, remote=True)
    actions = top.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("add", help="subscribe: nai notify add webhook URL")
    p.add_argument("via", metavar="NOTIFIER", help="e.g. webhook")
    p.add_argument("target", metavar="ADDRESS", help="where it sends, e.g. a URL")
    p.add_argument("--on", default="failed,succeeded", metavar="EVENTS",
                   help=f"comma-separated, of {','.join(NOTIFY_EVENTS)} "
                   "(default: failed,succeeded)")
    json_flag(p)
    json_flag(actions.add_parser("list", help="your subscriptions"))
    p = actions.add_parser("rm", help="unsubscribe")
    p.add_argument("id", type=int)
    json_flag(p)
