"""`nai dataset copy NAME@V --from A --to B` (and `nai model copy`): a registry version
moved between two servers through this client.

Registries stay per server (issue 21). The copy reads the version's tree from A, asks
B which of its blobs B lacks (the upload's own question, DESIGN §6), streams only those
from A to B as they arrive (A's archive of the files, renamed member by member to the
digests B's upload expects; nothing is written here), records the same tree on B and
registers it there as the next version of NAME, with the same description, tag and
metadata. B checks every blob against its digest and the tree against its id, so what
B holds is byte for byte what A holds."""

from __future__ import annotations

import argparse
import tarfile
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from nai_server.protocol import ConnectionFailed, NaiError, NotFound, format_size
from nai_tui.cli import commands
from nai_tui.cli.contract import UsageMistake
from nai_tui.cli.output import emit_json, note
from nai_tui.config import ClientConfig
from nai_tui.remote.client import ServerClient
from nai_tui.sync import packing
from nai_tui.sync import push as sync
from nai_tui.sync.pull_stream import ChunkReader, archive

PATHS_PER_ARCHIVE = 10_000  # paths asked of A per archive request


@dataclass
class Copied:
    """What a copy did: the version copied, the one it made on B, what travelled."""

    source_version: int
    version: int
    unchanged: bool
    blobs_sent: int
    bytes_sent: int
    blobs_total: int


def blob_stream(source: ServerClient, tree_id: str, wanted: dict[str, Any]
                ) -> Generator[bytes, None, None]:
    """The upload pack (members named by digest) of the files `wanted` (path → entry)
    of tree `tree_id` on `source`, read from its archives as they arrive."""
    paths = list(wanted)
    for start in range(0, len(paths), PATHS_PER_ARCHIVE):
        batch = paths[start:start + PATHS_PER_ARCHIVE]
        chunks = archive(source, tree_id, batch)
        try:
            with tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as tar:
                for member in tar:
                    entry = wanted.get(member.name)
                    if entry is None or not member.isreg() or member.size != entry.size:
                        raise NaiError(f"{source.name} sent {member.name!r}, which was not "
                                       "asked for or has the wrong size")
                    yield packing.blob_header(entry.sha256, entry.size)
                    body = tar.extractfile(member)
                    assert body is not None
                    while data := body.read(1 << 20):
                        yield data
                    yield bytes(-entry.size % tarfile.BLOCKSIZE)
        except tarfile.TarError as exc:
            raise ConnectionFailed(f"the copy from {source.name} broke off ({exc})") from exc
        finally:
            chunks.close()
    yield bytes(2 * tarfile.BLOCKSIZE)


def copy_version(source: ServerClient, target: ServerClient, kind: str, name: str,
                 ref: str, *, group: str | None = None, shared: bool = False) -> Copied:
    """Copy `name@ref` from `source` to `target` (see the module's docstring); a name
    new on `target` is created there owned by `group` (else the caller), `shared` or
    not."""
    version = source.registry_version(kind, name, ref)
    tree = source.tree(version.tree_id)
    files = [e for e in tree.entries if e.kind == "file"]
    one_path = {e.sha256: e for e in files}  # a blob travels once, however many paths
    lacking = set(sync.missing_blobs(target, sorted(one_path)))
    wanted = {one_path[d].path: one_path[d] for d in sorted(lacking)}
    if wanted:
        stream = blob_stream(source, tree.id, wanted)
        try:
            target.upload_pack(stream)
        finally:
            stream.close()
    recorded = target.create_tree([e.model_dump() for e in tree.entries])
    if recorded.id != tree.id:
        raise NaiError(f"{target.name} recorded the tree as {recorded.id}, not {tree.id}; "
                       f"nothing was registered")
    # finetune_code names a version of the source server's (and only the server sets it).
    metadata = {k: v for k, v in version.metadata.items() if k != "finetune_code"}
    try:
        target.registry_entry(kind, name)
    except NotFound:
        entry = target.registry_create(kind, name, tree.id, description=version.description,
                                       tag=version.tag, metadata=metadata, group=group,
                                       shared=shared)
        made, unchanged = entry.versions[-1].version, False
    else:
        pushed = target.registry_push(kind, name, tree.id, description=version.description,
                                      tag=version.tag, metadata=metadata)
        made, unchanged = pushed.version, pushed.unchanged
    return Copied(version.version, made, unchanged, len(wanted),
                  sum(e.size for e in wanted.values()), len(one_path))


def cmd_copy(args: argparse.Namespace) -> int:
    """`nai dataset|model copy NAME[@VERSION] --from A --to B`."""
    from nai_tui.cli.registry_commands import split_ref

    name, ref = split_ref(args.ref)
    if args.source == args.target:
        raise UsageMistake(f"--from and --to are both {args.source}: give two servers")
    config = ClientConfig.load()
    source_entry, target_entry = config.get(args.source), config.get(args.target)
    with commands.connect(source_entry) as source, commands.connect(target_entry) as target:
        done = copy_version(source, target, args.kind, name, ref or "latest",
                            group=args.group, shared=args.shared)
    version = done.source_version
    body = {"kind": args.kind, "name": name, "from": args.source, "to": args.target,
            "source_version": version, "version": done.version, "unchanged": done.unchanged,
            "blobs_sent": done.blobs_sent, "bytes_sent": done.bytes_sent,
            "blobs_total": done.blobs_total}
    if args.json:
        emit_json(body)
    else:
        print(f"{name}@{done.version}")
    note(f"{args.kind} {name}@{version} of {args.source} is {name}@{done.version} on "
         f"{args.target}" + (" (its latest version already held these files)"
                             if done.unchanged else "") +
         f": {done.blobs_sent} of {done.blobs_total} blob(s) sent "
         f"({format_size(done.bytes_sent)}), the rest were there")
    return 0


def add_copy_verb(verbs: Any, kind: str, json_flag: Any) -> None:
    """`copy` among the verbs of `nai dataset` / `nai model`."""
    text = f"copy a {kind} version from one configured server to another"
    p: argparse.ArgumentParser = verbs.add_parser("copy", help=text, description=text + (
        "; only the files the other server lacks travel, through this machine"))
    p.set_defaults(func=cmd_copy, remote=False)
    json_flag(p)
    p.add_argument("ref", metavar="NAME[@VERSION]")
    p.add_argument("--from", dest="source", required=True, metavar="SERVER")
    p.add_argument("--to", dest="target", required=True, metavar="SERVER")
    p.add_argument("--group", help=f"make this group the {kind}'s owner on the target "
                   "(when it is new there; default: you)")
    p.add_argument("--shared", action="store_true",
                   help="let every registered user of the target read it (when new there)")

