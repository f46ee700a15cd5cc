"""`nai usage`: who uses how much of the GPUs, as `sshare` shows it: GPUs held now,
usage decayed with the scheduler's half-life, share of all usage, fair-share standing
(usage over share: above 1, a user's jobs wait behind others') and use against quota."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from nai_server.protocol import NotFound
from nai_server.protocol.usage import UsageReport, UsageRow
from nai_tui.cli.output import emit_json, note, table
from nai_tui.remote.client import ServerClient
from nai_tui.remote.usage import ordered, quota_use, read_usage, standing_words

HEADERS = ["KIND", "NAME", "GPUS NOW", "USAGE GPU-H", "SHARE", "STANDING", "FACTOR",
           "QUOTA USE"]


def add_usage_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register `nai usage` through build_parser's `add`."""
    p = add("usage", cmd_usage, "GPU use per user and group: now, decayed, fair-share "
            "standing and quota (as sshare shows it)")
    p.add_argument("--user", metavar="NAME", help="only this user (and no groups)")
    p.add_argument("--group", metavar="NAME", help="only this group (and no users)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--users", action="store_true", help="only users")
    kind.add_argument("--groups", action="store_true", help="only groups")


def chosen(report: UsageReport, args: argparse.Namespace) -> list[UsageRow]:
    """The rows the options ask for, users first (most usage on top), then groups."""
    rows = ordered(report.rows)
    if args.user or args.users:
        rows = [r for r in rows if r.kind == "user" and args.user in (None, r.name)]
    if args.group or args.groups:
        rows = [r for r in rows if r.kind == "group" and args.group in (None, r.name)]
    return rows


def cells(row: UsageRow) -> list[str]:
    return [row.kind, row.name, str(row.gpus_in_use), f"{row.usage_gpu_hours:.1f}",
            f"{row.share:.0%}", standing_words(row), f"{row.factor:.2f}", quota_use(row)]


def cmd_usage(args: argparse.Namespace, client: ServerClient) -> int:
    try:
        report = read_usage(client)
    except NotFound:
        raise NotFound(f"{client.name} has no usage report: its nai-server is older than "
                       f"`nai usage`; upgrade the server") from None
    rows = chosen(report, args)
    if args.json:
        emit_json({"half_life_hours": report.half_life_hours,
                   "rows": [r.model_dump(mode="json") for r in rows]})
        return 0
    if rows:
        print(table([cells(r) for r in rows], HEADERS))
    who = args.user or args.group
    if not rows:
        note(f"no GPU use recorded for {who}" if who else "no GPU use recorded yet")
    note(f"usage decays with a half-life of {report.half_life_hours:g} h; standing is usage "
         f"over share: above 1, jobs wait behind those of users below it")
    return 0
