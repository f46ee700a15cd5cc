"""Tree manifests: validation, canonical ids and selection. Pure: no I/O.

A tree is a list of entries (regular files and symlinks); directories are implied
by the paths in it. Everything that arrives from a client passes through
`parse_manifest` before the server acts on it, so this module is where path safety
(DESIGN §6) is decided.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

EntryKind = Literal["file", "symlink"]

MAX_PATH = 4096
MAX_NAME = 255  # NAME_MAX on Linux: longer components cannot be written out anyway
MAX_SIZE = 2**53 - 1  # bytes in one file: far beyond any limit, and exact in JSON
MAX_LINK_HOPS = 40  # the kernel's own limit for symlink chains (ELOOP)
_SHOWN_PROBLEMS = 5

_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
# How json.dumps(ensure_ascii=False) writes a string, quotes included.
_json_string: Callable[[str], str] = json.encoder.encode_basestring
_DRIVE = re.compile(r"[A-Za-z]:")
# C0 control characters and DEL: a newline in a name splits every line-based listing,
# log and shell loop that meets it, and no tool writes such a name on purpose.
_CONTROL = re.compile("[\x00-\x1f\x7f]")
# Paths every rule of path_problem accepts: components of common ASCII characters, none
# starting with a dot (so never "." or ".."), none empty, none longer than MAX_NAME.
_PLAIN_NAME = r"[A-Za-z0-9_+=,@%-][A-Za-z0-9._+=,@%-]{0," + str(MAX_NAME - 1) + "}"
_PLAIN_PATH = re.compile(rf"(?:{_PLAIN_NAME}/)*{_PLAIN_NAME}\Z")


@dataclass(frozen=True)
class Entry:
    """One file or symlink of a tree. `mode` holds permission bits only."""

    path: str
    kind: EntryKind
    size: int
    mode: int
    sha256: str  # "" for symlinks
    target: str = ""  # symlink target, "" for files


@dataclass(frozen=True)
class Limits:
    """Caps applied to every tree a client sends or a job produces."""

    max_file_size: int
    max_entries: int
    max_total_size: int


UNLIMITED = Limits(sys.maxsize, sys.maxsize, sys.maxsize)


def _show(path: str) -> str:
    """A path as it can appear in a one-line message (no control characters, not huge)."""
    shown = path if path.isprintable() else repr(path)
    return shown if len(shown) <= 120 else shown[:117] + "..."


class TreeError(ValueError):
    """A manifest broke one or more rules; `problems` lists (path, reason) pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems: list[tuple[str, str]] = list(problems)
        first = self.problems[0][0] if self.problems else ""
        self.path: str | None = first or None
        shown = "; ".join(
            f"{_show(p)}: {m}" if p else m for p, m in self.problems[:_SHOWN_PROBLEMS]
        )
        more = len(self.problems) - _SHOWN_PROBLEMS
        super().__init__(f"invalid tree: {shown}" + (f" (and {more} more)" if more > 0 else ""))


# A packed upload names each member by its digest, except a member named so: the
# receiver stores it under whatever digest its content hashes to. A client sends a
# large file it has not hashed yet that way, hashing it while it travels.
UNNAMED_BLOB = "unnamed"


def is_digest(value: object) -> bool:
    """True for a 64-character lowercase hex sha256 digest."""
    return isinstance(value, str) and _SHA256.match(value) is not None


def path_problem(path: object) -> str | None:
    """Why `path` is not a safe relative POSIX path inside a tree, or None if it is."""
    if type(path) is str and len(path) <= MAX_PATH and _PLAIN_PATH.match(path):
        return None  # the common case, at a fifth of the cost of the rules
    return _path_rules(path)


def _path_rules(path: object) -> str | None:
    if not isinstance(path, str) or not path:
        return "path must be a non-empty string"
    if len(path) > MAX_PATH:
        return f"path is longer than {MAX_PATH} characters"
    if "\0" in path:
        return "path contains a NUL character"
    if (bad := _CONTROL.search(path)) is not None:
        return (f"path contains a control character (U+{ord(bad.group()):04X}); "
                "names may not hold newlines, tabs or other characters below U+0020 or U+007F")
    if "\\" in path:
        return "path contains a backslash; use '/' between components"
    if path.startswith("/") or _DRIVE.match(path):
        return "absolute paths are not allowed"
    if path.endswith("/"):
        return "path ends with '/'"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "path is not valid UTF-8"
    for part in path.split("/"):
        if part == "":
            return "path has an empty component ('//')"
        if part == "..":
            return "path may not contain '..'"
        if part == ".":
            return "path may not contain '.' components"
        if len(part.encode("utf-8")) > MAX_NAME:
            return f"path component is longer than {MAX_NAME} bytes"
    return None


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _kind_from_mode(mode: int) -> tuple[EntryKind | None, str | None]:
    """File type carried in st_mode-style bits: (kind or None if absent, problem)."""
    fmt = stat.S_IFMT(mode)
    if fmt == 0:
        return None, None
    if fmt == stat.S_IFREG:
        return "file", None
    if fmt == stat.S_IFLNK:
        return "symlink", None
    if fmt == stat.S_IFDIR:
        return None, "directories are implied by paths; do not list them"
    return None, "device files / special files are not allowed"


def _parse_entry(raw: object) -> tuple[Entry | None, list[str]]:
    """One raw manifest entry → (Entry or None, problems). Limits are checked later."""
    if type(raw) is not dict and not isinstance(raw, Mapping):
        return None, ["entry must be an object"]
    problems: list[str] = []
    path = raw.get("path")
    if (why := path_problem(path)) is not None:
        problems.append(why)
    mode = raw.get("mode")
    kind_bits: EntryKind | None = None
    if mode is not None:
        if type(mode) is not int or not 0 <= mode <= 0o177777:
            problems.append("mode must be an integer st_mode or permission bits")
            mode = None
        else:
            kind_bits, why = _kind_from_mode(mode)
            if why:
                problems.append(why)
    kind = raw.get("kind") or kind_bits or ("symlink" if "target" in raw else "file")
    if kind not in ("file", "symlink"):
        problems.append("kind must be 'file' or 'symlink' (directories are implied by paths)")
    elif kind_bits is not None and kind_bits != kind:
        problems.append(f"mode says {kind_bits} but kind is {kind}")
    size, digest, target = raw.get("size"), raw.get("sha256"), raw.get("target")
    if kind == "file":
        # Required, not defaulted: limits are judged on it (the store checks it is true).
        if type(size) is not int or not 0 <= size <= MAX_SIZE:
            problems.append(f"size must be an integer from 0 to {MAX_SIZE}")
        if not is_digest(digest):
            problems.append("sha256 must be 64 lowercase hex characters")
    elif kind == "symlink":
        if not isinstance(target, str) or not target or "\0" in target:
            problems.append("symlink target must be a non-empty string")
        elif target.startswith("/") or _DRIVE.match(target):
            problems.append("symlink leaves the tree (absolute target)")
    if problems or not isinstance(path, str):
        return None, problems
    if kind == "symlink":
        # Normalised so that the same link gives the same tree id from any client.
        return Entry(path, "symlink", 0, 0o777, "", raw["target"]), []
    perm = 0o644 if mode is None else mode & 0o777  # setuid, setgid and sticky never survive
    return Entry(path, "file", raw["size"], perm, raw["sha256"], ""), []


class _LinkLoop(Exception):
    """Too many symlink hops while resolving a target."""


def _resolve(
    base: list[str], target: str, links: Mapping[str, str], hops: list[int]
) -> list[str] | None:
    """Where `target`, read in directory `base`, lands; None if it leaves the tree.

    Purely lexical resolution is not enough: with `c -> .`, the target `c/..` looks
    like the root but really is its parent. So the tree's own symlinks met on the way
    are followed, as the kernel would follow them once the tree is written out.
    """
    stack = list(base)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(part)
        hop = links.get("/".join(stack))
        if hop is None:
            continue
        hops[0] += 1
        if hops[0] > MAX_LINK_HOPS:
            raise _LinkLoop
        stack.pop()
        landed = None if hop.startswith("/") else _resolve(stack, hop, links, hops)
        if landed is None:
            return None
        stack = landed
    return stack


def _tree_problems(entries: Sequence[Entry], limits: Limits) -> list[tuple[str, str]]:
    """Rules that need the whole tree: sizes, duplicates, file-vs-dir, symlink escapes."""
    problems: list[tuple[str, str]] = []
    total = 0
    kinds: dict[str, EntryKind] = {}
    for e in entries:
        total += e.size
        if e.size > limits.max_file_size:
            problems.append(
                (e.path, f"file is {_human(e.size)}, the limit is {_human(limits.max_file_size)}")
            )
        if e.path in kinds:
            problems.append((e.path, "listed more than once"))
        kinds[e.path] = e.kind
    if total > limits.max_total_size:
        problems.append(
            ("", f"tree is {_human(total)}, the limit is {_human(limits.max_total_size)}")
        )
    clashes: set[str] = set()
    for e in entries:
        parts = e.path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in kinds and parent not in clashes:
                clashes.add(parent)
                why = f"is a {kinds[parent]} but also the directory of {e.path}"
                problems.append((parent, why))
    problems += link_problems({e.path: e.target for e in entries if e.kind == "symlink"})
    return problems


def link_problems(links: Mapping[str, str]) -> list[tuple[str, str]]:
    """(path, why) for each symlink (path → target) of a tree that leaves it or loops,
    following the tree's own links as the kernel will once the tree is written out."""
    problems: list[tuple[str, str]] = []
    for path, target in links.items():
        if target.startswith("/"):
            problems.append((path, "symlink leaves the tree (absolute target)"))
            continue
        try:
            landed = _resolve(path.split("/")[:-1], target, links, [0])
        except _LinkLoop:
            problems.append((path, f"symlink loop (more than {MAX_LINK_HOPS} hops)"))
            continue
        if landed is None:
            problems.append((path, f"symlink leaves the tree (target {target!r})"))
    return problems


class Manifest(tuple[Entry, ...]):
    """Entries that passed `parse_manifest` (only it makes one): code that needs a
    checked manifest can skip checking one again."""

    __slots__ = ()


def parse_manifest(raw: Sequence[object], limits: Limits) -> Manifest:
    """Validate a manifest (a JSON list of entry objects); raise TreeError naming every problem.

    Entries keep their order. Each object has `path`, `size`, `mode` and `sha256`
    (files) or `target` (symlinks); `kind` is optional when `mode` carries st_mode
    type bits or `target` is present.
    """
    if not isinstance(raw, (list, tuple)):
        raise TreeError([("", "manifest must be a list of entries")])
    if len(raw) > limits.max_entries:
        # Checked first so that a huge manifest is refused before any per-entry work.
        raise TreeError([("", f"tree has {len(raw)} entries, the limit is {limits.max_entries}")])
    problems: list[tuple[str, str]] = []
    entries: list[Entry] = []
    for index, item in enumerate(raw):
        entry, reasons = _parse_entry(item)
        if entry is not None:
            entries.append(entry)
            continue
        path = item.get("path") if isinstance(item, Mapping) else None
        name = path if isinstance(path, str) and path else f"entry #{index}"
        problems.extend((name, why) for why in reasons)
    problems.extend(_tree_problems(entries, limits))
    if problems:
        raise TreeError(problems)
    return Manifest(entries)


def with_contents(manifest: Manifest, contents: Sequence[tuple[str, int]]) -> Manifest:
    """`manifest` with its files' contents named: one (sha256, size) per file entry, in
    order (a tree listed before its bytes were read, then stored). Paths, kinds, modes
    and links, which its checks were about, stay as they were checked; the caller has
    bounded the sizes by its limits as the bytes arrived."""
    files = iter(contents)
    made: list[Entry] = []
    for e in manifest:
        if e.kind == "file":
            digest, size = next(files)
            if not is_digest(digest) or type(size) is not int or not 0 <= size <= MAX_SIZE:
                raise TreeError([(e.path, "the stored contents are malformed")])
            e = Entry(e.path, "file", size, e.mode, digest, "")
        made.append(e)
    if next(files, None) is not None:
        raise ValueError("more contents than files")
    return Manifest(made)


def manifest_to_json(entries: Iterable[Entry]) -> list[dict[str, Any]]:
    """Entries as JSON-ready dicts, in the given order; `parse_manifest` reads them back.

    Built field by field: dataclasses.asdict deep-copies every value, which made it
    most of the cost of recording a tree of 10,000 files."""
    return [{"path": e.path, "kind": e.kind, "size": e.size, "mode": e.mode,
             "sha256": e.sha256, "target": e.target} for e in entries]


def canonical_json(entries: Iterable[Entry]) -> bytes:
    """The one byte form of a tree: sorted by path, compact, UTF-8. Its sha256 is the id.

    It is what `json.dumps(manifest_to_json(sorted entries), sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)` writes (a test holds the two equal),
    built entry by entry with json's own string encoder in half the time."""
    quote = _json_string
    rows = [
        f'{{"kind":"{e.kind}","mode":{e.mode},"path":{quote(e.path)},"sha256":"{e.sha256}",'
        f'"size":{e.size},"target":{quote(e.target)}}}'
        for e in sorted(entries, key=lambda e: e.path)
    ]
    return f"[{','.join(rows)}]".encode()


def tree_id(entries: Iterable[Entry]) -> str:
    """Content id of a tree: the same files, modes and links give the same id."""
    return hashlib.sha256(canonical_json(entries)).hexdigest()


def diff_missing(entries: Iterable[Entry], have: Callable[[str], bool]) -> list[str]:
    """Unique file digests for which `have` is false, in manifest order."""
    seen: set[str] = set()
    missing: list[str] = []
    for e in entries:
        if e.kind != "file" or e.sha256 in seen:
            continue
        seen.add(e.sha256)
        if not have(e.sha256):
            missing.append(e.sha256)
    return missing


def select(entries: Iterable[Entry], prefix: str) -> tuple[Entry, ...]:
    """Entries at or under `prefix` (a file or a directory path); "" selects everything.

    One trailing "/" is accepted, since people type directory names that way.
    """
    if prefix == "":
        return tuple(entries)
    if prefix.endswith("/"):
        prefix = prefix[:-1]
    if (why := path_problem(prefix)) is not None:
        raise TreeError([(prefix, why)])
    under = prefix + "/"
    return tuple(e for e in entries if e.path == prefix or e.path.startswith(under))
