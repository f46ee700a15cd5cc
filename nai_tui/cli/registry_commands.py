"""`nai dataset ...` and `nai model ...`: versioned folders kept on the server.

    nai dataset push NAME DIR [--group G] [--shared] [--description TEXT] [--tag T]
                     [--allow-same]
    nai dataset list | show NAME[@VERSION] | pull NAME[@VERSION] [--to DIR]
    nai dataset rm NAME[@VERSION] | tag NAME[@VERSION] TAG | share NAME --group G|--all
    nai dataset unshare NAME [--group G]
    nai dataset process NAME[@VERSION] --with PLUGIN [--to NAME] [-o KEY=VALUE]...

and the same for `nai model` (whose push also takes `--metrics FILE.json` and
`--finetune-command CMD`). A push syncs the folder (only files the server lacks travel)
and records it as the next version; a folder identical to the latest version records
nothing ("unchanged, still @N") unless --allow-same. stdout carries data, stderr the
rest, as in `nai_tui.cli.commands`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from nai_server.protocol import (
    Invalid,
    NotFound,
    PushedVersion,
    RegistryEntry,
    RegistryVersion,
    format_size,
)
from nai_tui.cli.annotate_command import add_annotate_verb
from nai_tui.cli.contract import UsageMistake, json_flag
from nai_tui.cli.model_commands import add_register_verb, metric_cell, version_details
from nai_tui.cli.names import check_name
from nai_tui.cli.output import emit_json, note, report_pull, table
from nai_tui.cli.process_command import add_process_verb
from nai_tui.cli.registry_copy import add_copy_verb
from nai_tui.config import cache_dir
from nai_tui.remote.client import ServerClient
from nai_tui.sync import push as sync

KINDS = ("dataset", "model")
# Metadata `nai model show` prints as lines of their own (model_commands.version_details).
SHOWN_APART = ("summary", "lineage", "source", "metric", "summary_partial")
FORCE_HELP = ("overwrite local files that differ from the server's copy (by default "
              "they are kept, listed, and nai exits with status 5)")


def split_ref(ref: str) -> tuple[str, str | None]:
    """`name[@version]` → (name, version or None); the server checks the rest."""
    name, at, version = ref.partition("@")
    if not name or (at and not version):
        raise UsageMistake(f"{ref!r}: write NAME, NAME@3 or NAME@TAG")
    return name, version or None


def _owner(owner: dict[str, str]) -> str:
    return f"group {owner['group']}" if "group" in owner else owner.get("user", "?")


def _readers(entry: Any) -> str:
    who = ["everyone"] if entry.visibility == "shared" else ["owners"]
    who += [f"group {g}" for g in entry.shared_with_groups]
    return ", ".join(who)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _hash_cache() -> sync.HashCache:
    return sync.HashCache(cache_dir() / "hashes.sqlite")


# --- push -----------------------------------------------------------------------------


def _metadata(args: argparse.Namespace) -> dict[str, Any]:
    extra = ({"finetune_command": args.finetune_command}
             if getattr(args, "finetune_command", None) else {})
    metrics_file = getattr(args, "metrics", None)
    if not metrics_file:
        return extra
    try:
        metrics = json.loads(Path(metrics_file).read_text())
    except OSError as exc:
        raise UsageMistake(f"cannot read --metrics {metrics_file}: {exc.strerror}") from exc
    except ValueError as exc:
        raise UsageMistake(f"--metrics {metrics_file} is not JSON: {exc}") from exc
    if not isinstance(metrics, dict):
        raise UsageMistake(f"--metrics {metrics_file}: expected a JSON object like "
                           f'{{"accuracy": 0.93}}')
    return {"metrics": metrics, **extra}


def push_folder(client: ServerClient, kind: str, name: str, folder: Path, *,
                group: str | None = None, shared: bool = False, description: str = "",
                tag: str | None = None, metadata: dict[str, Any] | None = None,
                cache: sync.HashCache | None = None, allow_same: bool = False
                ) -> RegistryVersion:
    """Sync `folder` and record it as the next version of `name` (created if new).

    When the latest version already holds exactly these files, the server records
    nothing and answers that version with `unchanged` set (unless `allow_same`)."""
    # Before the upload: a name the server would refuse must not cost a sync first.
    check_name(f"{kind} name", name)
    check_name("--group", group)
    check_name("--tag", tag, tag=True)
    folder = folder.resolve()
    if not folder.is_dir():
        raise UsageMistake(f"{folder} is not a folder; give the folder holding the "
                           f"{kind}'s files")
    try:
        existing: RegistryEntry | None = client.registry_entry(kind, name)
    except NotFound:
        existing = None
    if existing is not None and group is not None and existing.owner.get("group") != group:
        raise Invalid(f"{kind} {name} already exists and belongs to {_owner(existing.owner)}; "
                      f"--group only applies when it is created")
    note(f"syncing {folder} to {client.name} ...")
    tree = sync.push(client, folder, cache=cache or _hash_cache())
    if existing is None:
        entry = client.registry_create(kind, name, tree, group=group, shared=shared,
                                       description=description, tag=tag, metadata=metadata)
        return entry.versions[-1]
    version = client.registry_push(kind, name, tree, description=description, tag=tag,
                                   metadata=metadata, allow_same=allow_same)
    if shared and existing.visibility != "shared":
        client.registry_share(kind, name, shared=True, groups=existing.shared_with_groups)
    return version


def cmd_push(args: argparse.Namespace, client: ServerClient) -> int:
    v = push_folder(client, args.kind, args.name, Path(args.dir), group=args.group,
                    shared=args.shared, description=args.description or "", tag=args.tag,
                    metadata=_metadata(args), allow_same=args.allow_same)
    if args.json:
        emit_json(v)
    else:
        print(f"{args.name}@{v.version}")
    if isinstance(v, PushedVersion) and v.unchanged:
        # Like git's refusal of an empty commit, but not an error: the folder is on the
        # server, as that version. Exit 0 so scripts that push after every run go on.
        hint = (f"; its tag stays as it was (`nai {args.kind} tag {args.name}@{v.version} "
                f"{args.tag}` moves {args.tag} to it)" if args.tag else "")
        note(f"{args.kind} {args.name}: unchanged, still @{v.version} (the latest version "
             f"holds exactly these files; --allow-same records a new version anyway){hint}")
        return 0
    note(f"{args.kind} {args.name}@{v.version}" + (f" ({v.tag})" if v.tag else "") +
         f": {v.files} files, {format_size(v.size)}")
    return 0


# --- reading --------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, client: ServerClient) -> int:
    entries = client.registry_list(args.kind)
    if args.json:
        emit_json(entries)
        return 0
    rows = [[e.name, "-" if e.latest is None else e.latest, e.latest_tag or "",
             format_size(e.size), e.files, _owner(e.owner), _readers(e), e.description[:40]]
            for e in entries]
    headers = ["NAME", "LATEST", "TAG", "SIZE", "FILES", "OWNER", "READERS", "DESCRIPTION"]
    if any(e.metric for e in entries):  # models registered with --metric
        for row, e in zip(rows, entries, strict=True):
            row.insert(5, metric_cell(e.metric))
        headers.insert(5, "METRIC (BEST)")
    print(table(rows, headers))
    return 0


def cmd_show(args: argparse.Namespace, client: ServerClient) -> int:
    name, version = split_ref(args.ref)
    if version is not None:
        v = client.registry_version(args.kind, name, version)
        if args.json:
            emit_json(v)
            return 0
        lines = [f"{args.kind} {name}@{v.version}" + (f" ({v.tag})" if v.tag else "") +
                 (" - removed, kept while in use" if v.deleted else ""),
                 f"  tree:     {v.tree_id}",
                 f"  size:     {format_size(v.size)} in {v.files} files",
                 f"  created:  {_when(v.created_at)} by {v.created_by}",
                 f"  used by:  {', '.join(f'job {j}' for j in v.used_by) or 'no jobs'}"]
        if v.description:
            lines.append(f"  about:    {v.description}")
        rest = {k: x for k, x in v.metadata.items() if k not in SHOWN_APART}
        if rest:
            lines.append(f"  metadata: {json.dumps(rest, sort_keys=True)}")
        print("\n".join(lines + version_details(v)))
        return 0
    e = client.registry_entry(args.kind, name)
    if args.json:
        emit_json(e)
        return 0
    print(f"{args.kind} {e.name}: owner {_owner(e.owner)}; readers: {_readers(e)}" +
          (f"\n  {e.description}" if e.description else ""))
    rows = [[v.version, v.tag or "", format_size(v.size), v.files, _when(v.created_at),
             v.created_by, ",".join(map(str, v.used_by)) or "-",
             "removed (kept while in use)" if v.deleted else ""] for v in e.versions]
    print(table(rows, ["VERSION", "TAG", "SIZE", "FILES", "CREATED", "BY", "JOBS", ""]))
    live = [v for v in e.versions if not v.deleted]
    details = version_details(live[-1]) if live else []
    if details:
        print(f"latest, @{live[-1].version}:\n" + "\n".join(details))
    return 0


def cmd_pull(args: argparse.Namespace, client: ServerClient) -> int:
    name, version = split_ref(args.ref)
    v = client.registry_version(args.kind, name, version or "latest")
    if v.deleted:
        raise Invalid(f"{args.kind} {name}@{v.version} was removed; it is kept only while "
                      f"jobs still use it")
    dest = Path(args.to) if args.to else Path.cwd() / name
    result = sync.pull(client, v.tree_id, dest, cache=_hash_cache(), force=args.force)
    return report_pull(result, f"{args.kind} {name}@{v.version}", dest,
                       {"kind": args.kind, "name": name, "version": v.version}
                       if args.json else None)


# --- changes --------------------------------------------------------------------------


def cmd_rm(args: argparse.Namespace, client: ServerClient) -> int:
    name, version = split_ref(args.ref)
    result = client.registry_remove(args.kind, name, version)
    if args.json:
        emit_json(result)
    else:
        for number in result.removed:
            print(f"{name}@{number}")
    note(result.message)
    return 0


def cmd_tag(args: argparse.Namespace, client: ServerClient) -> int:
    name, version = split_ref(args.ref)
    if (args.tag is None) == (not args.clear):
        raise UsageMistake("give a TAG to set, or --clear to remove the version's tag")
    check_name("tag", args.tag, tag=True)
    v = client.registry_tag(args.kind, name, version or "latest", None if args.clear else args.tag)
    if args.json:
        emit_json(v)
    else:
        print(f"{name}@{v.version}")
    note(f"{args.kind} {name}@{v.version} " + (f"is now tagged {v.tag}" if v.tag else "has no tag"))
    return 0


def cmd_share(args: argparse.Namespace, client: ServerClient) -> int:
    entry = client.registry_entry(args.kind, args.name)
    shared = entry.visibility == "shared" or args.all
    groups = sorted({*entry.shared_with_groups, *(args.group or [])})
    entry = client.registry_share(args.kind, args.name, shared=shared, groups=groups)
    if args.json:
        emit_json(entry)
    note(f"{args.kind} {args.name}: readers are now {_readers(entry)}")
    return 0


def cmd_unshare(args: argparse.Namespace, client: ServerClient) -> int:
    entry = client.registry_entry(args.kind, args.name)
    if args.group:
        shared = entry.visibility == "shared"
        groups = [g for g in entry.shared_with_groups if g not in args.group]
    else:  # back to private: only the owners (and admins) read it
        shared, groups = False, []
    entry = client.registry_share(args.kind, args.name, shared=shared, groups=groups)
    if args.json:
        emit_json(entry)
    note(f"{args.kind} {args.name}: readers are now {_readers(entry)}")
    return 0


# --- the parser -----------------------------------------------------------------------


def add_registry_commands(sub: Any) -> None:
    """Add `dataset` and `model` with their verbs to the `nai` parser's subcommands."""
    for kind in KINDS:
        top = sub.add_parser(kind, help=f"versioned {kind}s on the server",
                             description=f"Versioned {kind}s kept on the server, owned by "
                             f"you or a group, shared with groups or everyone.")
        top.set_defaults(remote=True, kind=kind)
        verbs = top.add_subparsers(dest="verb", metavar="VERB", required=True)

        def verb(name: str, func: Any, help_text: str,
                 verbs: Any = verbs) -> argparse.ArgumentParser:
            p: argparse.ArgumentParser = verbs.add_parser(name, help=help_text,
                                                          description=help_text)
            p.set_defaults(func=func)
            json_flag(p)  # every verb answers with data: the version or the entry
            return p

        p = verb("push", cmd_push, f"upload a folder as the next version of a {kind}")
        p.add_argument("name")
        p.add_argument("dir")
        p.add_argument("--group", help=f"make this group the {kind}'s owner (when created)")
        p.add_argument("--shared", action="store_true",
                       help="let every registered user read it")
        p.add_argument("--description")
        p.add_argument("--tag", help="a name for this version, e.g. best or v1.0")
        p.add_argument("--allow-same", action="store_true",
                       help="record a new version even if the latest holds the same files "
                       "(by default such a push changes nothing)")
        if kind == "model":
            p.add_argument("--metrics", metavar="FILE.json",
                           help="a JSON object of metrics to keep with the version")
            p.add_argument("--finetune-command", metavar="CMD",
                           help="what `nai finetune` runs in this version's files")
            add_register_verb(verb)
        verb("list", cmd_list, f"the {kind}s you may read")
        p = verb("show", cmd_show, f"a {kind}'s versions, or one version in detail")
        p.add_argument("ref", metavar="NAME[@VERSION]")
        p = verb("pull", cmd_pull, f"download a {kind} version into a folder")
        p.add_argument("ref", metavar="NAME[@VERSION]")
        p.add_argument("--to", help="destination folder (default: ./NAME)")
        p.add_argument("--force", action="store_true", help=FORCE_HELP)
        p = verb("rm", cmd_rm, f"remove a {kind}, or one version; versions still in use "
                 f"are kept until they are not")
        p.add_argument("ref", metavar="NAME[@VERSION]")
        p = verb("tag", cmd_tag, "put a tag on a version (default: the latest)")
        p.add_argument("ref", metavar="NAME[@VERSION]")
        p.add_argument("tag", nargs="?")
        p.add_argument("--clear", action="store_true", help="remove the version's tag")
        p = verb("share", cmd_share, f"let a group, or everyone, read a {kind}")
        p.add_argument("name")
        who = p.add_mutually_exclusive_group(required=True)
        who.add_argument("--group", action="append", help="repeatable")
        who.add_argument("--all", action="store_true", help="every registered user")
        add_copy_verb(verbs, kind, json_flag)
        if kind == "dataset":
            add_process_verb(verb)
            add_annotate_verb(verb)
        p = verb("unshare", cmd_unshare, "stop sharing with a group, or with everyone")
        p.add_argument("name")
        p.add_argument("--group", action="append",
                       help="only this group (default: back to private)")
