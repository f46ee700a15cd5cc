"""`nai-admin`: users, groups, quotas, drain, store checks and plugins. A client of the
daemon's socket only; it never opens the database."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from nai_server import __version__
from nai_server.config import find_socket
from nai_server.core.units import format_duration, format_size, parse_duration
from nai_server.protocol import (
    API_VERSION,
    GC_GRACE_SECONDS,
    Conflict,
    ConnectionFailed,
    Invalid,
    NaiError,
    error_from_body,
)


class AdminClient:
    """Minimal typed calls over the unix socket."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.http = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)),
                                 base_url="http://nai/v1", timeout=30.0)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self.http.request(method, path, json=body)
        except (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError) as exc:
            raise ConnectionFailed(
                f"no nai-server answers on {self.socket_path} (is `nai-server run` running? "
                f"pass --socket PATH for another one)") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise error_from_body(response.status_code, body)
        return response.json() if response.content else None


def _quota_text(q: dict[str, Any]) -> str:
    gpus = "unlimited" if q.get("max_gpus") is None else str(q["max_gpus"])
    hours = ("unlimited" if q.get("gpu_hours") is None
             else f"{q['gpu_hours']:g} per {q.get('period_days', 30)} days")
    return f"GPUs at once: {gpus}; GPU-hours: {hours}"


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def run(args: argparse.Namespace, client: AdminClient) -> int | None:
    what, verb = args.what, getattr(args, "verb", None)
    if what == "store":
        if verb == "gc":
            return store_gc(args, client)
        return store_verify(args, client)
    if what in ("plugins", "plugin"):
        if verb in ("enable", "disable"):
            rows = client.call("PUT", f"/plugins/{args.name}", {"enabled": verb == "enable"})
            states = ", ".join(f"{p['kind']}: {p['state']}"
                               + (f" ({p['error']})" if p["error"] else "") for p in rows)
            _emit(args, rows, f"{args.name} {verb}d, now and after restarts ({states})")
            return 1 if any(p["state"] == "broken" for p in rows) else None
        plugins = client.call("GET", "/plugins")
        rows = [[p["name"], p["kind"], p["version"] or "-",
                 p["state"] + (" (required)" if p["required"] else "")
                 + (f", {p['stuck']} call(s) stuck" if p.get("stuck") else ""),
                 p["error"] or ""]
                for p in plugins]
        _emit(args, plugins, _table(rows, ["NAME", "KIND", "VERSION", "STATE", "ERROR"])
              if rows else "no plugins installed in the server's environment")
        return None
    if what == "user":
        if verb == "add":
            info = client.call("POST", "/users", {"name": args.name})
            _emit(args, info, f"added user {info['name']}")
        elif verb == "remove":
            client.call("DELETE", f"/users/{args.name}")
            _emit(args, {"removed": args.name}, f"removed user {args.name}")
        elif verb == "list":
            users = client.call("GET", "/users")
            rows = [[u["name"], str(u["uid"] if u["uid"] is not None else "-"),
                     "yes" if u["admin"] else "", ",".join(u["groups"])] for u in users]
            _emit(args, users, _table(rows, ["USER", "UID", "ADMIN", "GROUPS"]))
        else:
            u = client.call("GET", f"/users/{args.name}")
            _emit(args, u, f"user:   {u['name']} (uid {u['uid']})\nadmin:  {u['admin']}\n"
                           f"groups: {', '.join(u['groups']) or '-'}\n"
                           f"quota:  {_quota_text(u['quota'])}")
    elif what == "group":
        if verb == "add":
            g = client.call("POST", "/groups", {"name": args.name})
            _emit(args, g, f"added group {g['name']}")
        elif verb == "remove":
            client.call("DELETE", f"/groups/{args.name}")
            _emit(args, {"removed": args.name}, f"removed group {args.name}")
        elif verb == "list":
            groups = client.call("GET", "/groups")
            rows = [[g["name"], ",".join(g["members"]) or "-"] for g in groups]
            _emit(args, groups, _table(rows, ["GROUP", "MEMBERS"]))
        elif verb == "add-member":
            g = client.call("POST", f"/groups/{args.group}/members", {"user": args.user})
            _emit(args, g, f"{args.user} is now a member of {args.group}")
        else:
            g = client.call("DELETE", f"/groups/{args.group}/members/{args.user}")
            _emit(args, g, f"{args.user} is no longer a member of {args.group}")
    elif what == "quota":
        target = f"/users/{args.user}" if args.user else f"/groups/{args.group}"
        label = f"user {args.user}" if args.user else f"group {args.group}"
        if verb == "set":
            current = client.call("GET", f"{target}/quota")
            if args.gpus is not None:
                current["max_gpus"] = None if args.gpus < 0 else args.gpus
            if args.gpu_hours is not None:
                current["gpu_hours"] = None if args.gpu_hours < 0 else args.gpu_hours
            if args.period_days is not None:
                current["period_days"] = args.period_days
            q = client.call("PUT", f"{target}/quota", current)
        else:
            q = client.call("GET", f"{target}/quota")
        _emit(args, q, f"{label}: {_quota_text(q)}")
    elif what == "drain":
        if args.state == "status":
            d = client.call("GET", "/drain")
        else:
            d = client.call("PUT", "/drain", {"drained": args.state == "on"})
        _emit(args, d, "drained: no new jobs start" if d["drained"]
              else "not drained: jobs start as GPUs free up")
    return None


def _store_task(args: argparse.Namespace, client: AdminClient, path: str,
                body: dict[str, Any], what: str, busy: str, sleep: Any) -> dict[str, Any]:
    """Start the daemon's background store task at `path` (verify, gc), or follow the
    one running (its 409 says `busy`), and wait for its end unless `--detach`; its
    report (as it started, after --detach)."""
    if args.status:
        return dict(client.call("GET", path))
    try:
        report = client.call("POST", path, body)
    except Conflict as exc:
        if busy not in exc.message:  # the other task runs: say so
            raise
        print(f"nai-admin: a {what} is running already; following it", file=sys.stderr)
        report = client.call("GET", path)
    if args.detach:
        return dict(report)
    while report["state"] == "running":
        sleep(POLL_SECONDS)
        report = client.call("GET", path)
    return dict(report)


def store_verify(args: argparse.Namespace, client: AdminClient,
                 sleep: Any = time.sleep) -> int:
    """Start a verification (or follow the one running), wait for it, print its report;
    1 if it found damage or failed."""
    report = _store_task(args, client, "/store/verify", {"repair": args.repair},
                         "store verification", "verification is running", sleep)
    if args.detach and not args.status:
        _emit(args, report, "store verification started; see its report with "
                            "`nai-admin store verify --status`")
        return 0
    _emit(args, report, store_text(report))
    return 0 if report["state"] in ("never", "running") or report["clean"] else 1


POLL_SECONDS = 1.0


def store_gc(args: argparse.Namespace, client: AdminClient, sleep: Any = time.sleep) -> int:
    """Start a gc (or follow the one running), wait for it, print what it freed; 1 if
    it failed or was stopped."""
    body: dict[str, Any] = {}
    if not args.status:
        try:
            body = {"grace_seconds": parse_duration(args.grace), "dry_run": args.dry_run}
        except ValueError as exc:
            raise Invalid(f"--grace: {exc}") from None
    report = _store_task(args, client, "/store/gc", body, "store gc", "gc is running", sleep)
    if args.detach and not args.status:
        _emit(args, report, "store gc started; see its report with "
                            "`nai-admin store gc --status`")
        return 0
    _emit(args, report, gc_text(report))
    return 0 if report["state"] in ("never", "running", "done") else 1


def gc_text(r: dict[str, Any]) -> str:
    """A gc report for people."""
    if r["state"] == "never":
        return "no store gc has run since the daemon started"
    dry = r["dry_run"]
    grace = format_duration(int(r["grace_seconds"]))
    lines = [f"{r['state']}{' (dry run: nothing deleted)' if dry else ''}, grace {grace}"
             + (f", now in phase {r['phase']}" if r["state"] == "running" else "")
             + (f": {r['error']}" if r["error"] else "")]
    would = "would delete" if dry else "deleted"
    lines.append(f"trees: {would} {r['trees_deleted']}, kept {r['trees_kept']} "
                 f"({r['young_trees_kept']} only as younger than the grace)")
    lines.append(f"blobs: {would} {r['blobs_deleted']} ({format_size(r['bytes_deleted'])}), "
                 f"kept {r['blobs_kept']} ({format_size(r['bytes_kept'])}; "
                 f"{r['young_blobs_kept']} only as younger than the grace)")
    linked = r["bytes_deleted"] - r["bytes_freed"]
    lines.append(f"disk space {'to free' if dry else 'freed'}: {format_size(r['bytes_freed'])}"
                 + (f" (+{format_size(linked)} once the job folders and views linking them "
                    f"go)"
                    if linked else ""))
    lines.append(f"claims: {would} {r['claims_deleted']}")
    lines += [f"stray file (left alone): {s}" for s in r["stray"]]
    if r["unlisted_stray"]:
        lines.append(f"... and {r['unlisted_stray']} more stray files not listed")
    return "\n".join(lines)


def store_text(r: dict[str, Any]) -> str:
    """A verification report for people."""
    if r["state"] == "never":
        return "no store verification has run since the daemon started"
    head = (f"{r['state']}: {r['blobs_checked']} blob(s) ({r['bytes_checked']} bytes) and "
            f"{r['trees_checked']} tree(s) checked" + (", with --repair" if r["repair"] else ""))
    lines = [head + (f": {r['error']}" if r["error"] else "")]
    if r["state"] == "done" and r["clean"]:
        lines.append("the store is clean")
    for b in r["blobs"]:
        moved = f", moved aside to {b['moved_to']}" if b["moved_to"] else ""
        owners = ", ".join(b["owners"]) or "nobody (outputs, or uploaded before claims)"
        lines.append(f"{b['problem']} blob {b['digest']}{moved}; uploaded by {owners}")
    for t in r["trees"]:
        files = f": {', '.join(t['files'][:5])}" if t["files"] else ""
        more = f" (+{t['damaged_files'] - 5} more)" if t["damaged_files"] > 5 else ""
        lines.append(f"{t['problem']} tree {t['id']}{files}{more}")
    for j in r["jobs"]:
        uses = ", ".join(f"{u['role']} ({u['problem']})" for u in j["trees"])
        lines.append(f"job {j['id']} of {j['user']} ({j['state']}): {uses}")
    for v in r["versions"]:
        lines.append(f"{v['kind']} {v['name']}@{v['version']} of {v['owner']}: "
                     f"tree {v['problem']}")
    lines += [f"stray file (left alone): {s}" for s in r["stray"]]
    lines += [f"... and {n} more {key} not listed" for key, n in r["unlisted"].items()]
    if r["blobs"]:
        fix = ("moved aside: the store now asks for them again" if r["repair"]
               else "run with --repair to move corrupt ones aside")
        lines.append(f"{len(r['blobs'])} blob(s) cannot be restored without their bytes: "
                     f"their owners push the same files again (nai push / nai run), which "
                     f"restores them; {fix}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nai-admin", description="Manage nai users, groups, quotas, drain and the blob store.")
    parser.add_argument("--version", action="version",
                        version=f"nai-admin {__version__} (API {API_VERSION})")
    parser.add_argument("--socket", type=Path, help="daemon socket (default: auto)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    # Accepted after the subcommand too; SUPPRESS keeps a subparser's default from
    # overwriting a value given before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", type=Path, default=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="what", required=True)

    user = sub.add_parser("user", help="register unix users with nai").add_subparsers(
        dest="verb", required=True)
    for verb in ("add", "remove", "show"):
        user.add_parser(verb, parents=[common]).add_argument("name")
    user.add_parser("list", parents=[common])

    group = sub.add_parser("group", help="groups and their members").add_subparsers(
        dest="verb", required=True)
    for verb in ("add", "remove"):
        group.add_parser(verb, parents=[common]).add_argument("name")
    group.add_parser("list", parents=[common])
    for verb in ("add-member", "remove-member"):
        p = group.add_parser(verb, parents=[common])
        p.add_argument("group")
        p.add_argument("user")

    quota = sub.add_parser("quota", help="GPU quotas of a user or group").add_subparsers(
        dest="verb", required=True)
    for verb in ("set", "show"):
        p = quota.add_parser(verb, parents=[common])
        who = p.add_mutually_exclusive_group(required=True)
        who.add_argument("--user")
        who.add_argument("--group")
        if verb == "set":
            p.add_argument("--gpus", type=int, help="GPUs held at once (-1: unlimited)")
            p.add_argument("--gpu-hours", type=float,
                           help="GPU-hours per period (-1: unlimited)")
            p.add_argument("--period-days", type=int, help="length of the period (days)")

    store = sub.add_parser("store", help="check the blob store, free what is unused"
                           ).add_subparsers(
        dest="verb", required=True)
    verify = store.add_parser(
        "verify", parents=[common],
        help="re-hash every blob and check every tree (in the daemon, rate-limited); "
             "exit 1 if anything is missing or corrupt")
    verify.add_argument("--repair", action="store_true",
                        help="move corrupt blobs and trees aside (never deleted), so that "
                             "the next upload of their bytes restores them")
    gc = store.add_parser(
        "gc", parents=[common],
        help="delete the trees and blobs no job, dataset or model version, service or "
             "session refers to (in the daemon); exit 1 if it failed")
    gc.add_argument("--grace", default=format_duration(GC_GRACE_SECONDS),
                    help="keep what was stored or asked for within this long, e.g. 24h, "
                         "30m (default: %(default)s): uploads in flight")
    gc.add_argument("--dry-run", action="store_true",
                    help="count what would be deleted and freed; delete nothing")
    for task, name in ((verify, "verification"), (gc, "gc")):  # both run as _store_task
        task.add_argument("--detach", action="store_true",
                          help="start it and return; --status shows the report")
        task.add_argument("--status", action="store_true",
                          help=f"show the running or last {name}'s report")

    sub.add_parser("plugins", parents=[common],
                   help="list installed plugins: kind, version, ok/disabled/broken and why")
    plugin = sub.add_parser("plugin", help="list, enable or disable plugins").add_subparsers(
        dest="verb", required=True)
    plugin.add_parser("list", parents=[common], help="same as `nai-admin plugins`")
    for verb in ("enable", "disable"):
        plugin.add_parser(verb, parents=[common],
                          help=f"{verb} an installed plugin now and after restarts (over "
                               f"its plugins.NAME section in the server config)"
                          ).add_argument("name")

    drain = sub.add_parser("drain", parents=[common],
                           help="stop (on) or resume (off) starting new jobs")
    drain.add_argument("state", choices=["on", "off", "status"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = run(args, AdminClient(find_socket(args.socket)))
    except NaiError as exc:
        print(f"nai-admin: {exc}", file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
