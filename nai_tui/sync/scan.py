"""Scanning a folder into a tree manifest (DESIGN §6): ignore rules (.gitignore,
.naiignore, extra patterns), symlink checks and the per-file entries `push` sends."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pathspec

from nai_server.protocol import NaiError, TreeEntryModel, link_problems, path_problem
from nai_tui.sync.hashcache import HashCache, changed
from nai_tui.sync.progress import Meter, ProgressFactory, SilentMeter, auto_progress

log = logging.getLogger("nai.sync")

IGNORE_FILES = (".gitignore", ".naiignore")  # in this order: .naiignore has the last word
ALWAYS_SKIPPED = ".git"
_NAMED_GROUP = re.compile(r"\(\?P<\w+>")


# --- paths and symlinks ----------------------------------------------------------------


def escaping_links(links: Mapping[str, str]) -> list[str]:
    """The symlinks (path → target) that point outside the tree or loop (the server's
    rule, `link_problems`)."""
    return [path for path, _ in link_problems(links)]


def refusal(problems: Sequence[tuple[str, str]], what: str) -> NaiError:
    shown = "; ".join(f"{p}: {why}" for p, why in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return NaiError(f"{what}: {shown}{more}")


# --- scan ------------------------------------------------------------------------------


class _Rules:
    """One set of gitignore patterns (last match wins), plus one regex that says in a
    single search whether any pattern matches at all: for most paths none does."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.spec = pathspec.GitIgnoreSpec.from_lines(lines)
        live = [r for p in self.spec.patterns
                if p.include is not None and (r := getattr(p, "regex", None)) is not None]
        self.any: re.Pattern[str] | None = None
        if live and all(isinstance(r.pattern, str) and r.flags == re.UNICODE for r in live):
            # pathspec names a group in every pattern; names may not repeat in one regex.
            joined = "|".join(f"(?:{_NAMED_GROUP.sub('(?:', r.pattern)})" for r in live)
            try:
                self.any = re.compile(joined)
            except re.error:
                self.any = None
        # gitwildmatch regexes are all anchored: `match` then spares a search at each offset.
        self._anchored = all(r.pattern.startswith("^") for r in live)
        self.inert = not live

    def verdict(self, path: str) -> bool | None:
        """True: ignored, False: re-included (by a "!" pattern), None: no pattern matches."""
        if self.inert:
            return None
        if self.any is not None and (self.any.match(path) if self._anchored
                                     else self.any.search(path)) is None:
            return None
        return self.spec.check_file(path).include


class _Ignores:
    """gitignore rules as git applies them: each ignore file's patterns are relative to
    its folder, the deepest file with a matching pattern decides, and the last matching
    pattern in it wins. `extra` patterns (relative to the root) are asked first."""

    def __init__(self, extra: Sequence[str]) -> None:
        self.extra = _Rules(extra) if extra else None

    def ignored(self, rel: str, is_dir: bool, levels: Sequence[tuple[str, _Rules]]) -> bool:
        suffix = "/" if is_dir else ""
        if self.extra is not None and (verdict := self.extra.verdict(rel + suffix)) is not None:
            return verdict
        for prefix, rules in reversed(levels):
            verdict = rules.verdict(rel[len(prefix):] + suffix)
            if verdict is not None:
                return verdict
        return False


def _read_rules(folder: Path) -> list[str]:
    lines: list[str] = []
    for name in IGNORE_FILES:
        try:
            lines += (folder / name).read_text(encoding="utf-8", errors="replace").splitlines()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
        except OSError as exc:
            raise NaiError(f"cannot read {folder / name}: {exc.strerror}") from exc
    return lines


def _walk(root: Path, extra: Sequence[str]
          ) -> tuple[list[tuple[str, os.stat_result]], dict[str, str], list[tuple[str, str]]]:
    """Files (rel path, lstat), symlinks (rel path → target) and naming problems."""
    rules = _Ignores(extra)
    files: list[tuple[str, os.stat_result]] = []
    links: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    todo: list[tuple[str, list[tuple[str, _Rules]]]] = [("", [])]
    while todo:
        prefix, levels = todo.pop()
        folder = root / prefix if prefix else root
        lines = _read_rules(folder)
        if lines:
            levels = [*levels, (prefix, _Rules(lines))]
        try:
            with os.scandir(folder) as it:
                children = list(it)
        except OSError as exc:
            raise NaiError(f"cannot list {folder}: {exc.strerror}; fix its permissions or "
                           "add it to .naiignore") from exc
        for child in children:
            if child.name == ALWAYS_SKIPPED:
                continue
            rel = prefix + child.name
            try:
                is_dir = child.is_dir(follow_symlinks=False)  # no stat call: d_type
                if rules.ignored(rel, is_dir, levels):
                    continue
                st = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since listed
            if (why := path_problem(rel)) is not None:
                problems.append((rel.encode("utf-8", "backslashreplace").decode(),
                                 f"{why}; rename it or add it to .naiignore"))
            elif is_dir:
                todo.append((rel + "/", levels))
            elif stat.S_ISREG(st.st_mode):
                files.append((rel, st))
            elif stat.S_ISLNK(st.st_mode):
                links[rel] = target = os.readlink(child.path)
                try:
                    target.encode("utf-8")
                except UnicodeEncodeError:
                    problems.append((rel, "symlink target is not valid UTF-8; change it or "
                                          "add the link to .naiignore"))
            else:
                log.warning("skipping %s: not a regular file, folder or symlink", child.path)
    return files, links, problems


@dataclass
class Survey:
    """A folder listed and checked, before any file is read: its files (relative path,
    lstat) with the digests the hash cache vouches for (None: to be read), and its
    symlinks."""

    root: Path
    files: list[tuple[str, os.stat_result]]
    known: dict[str, str | None]
    links: dict[str, str]

    @property
    def base(self) -> str:
        return f"{self.root}/"  # plain strings: pathlib costs more than a rescan

    def unread(self) -> list[tuple[str, os.stat_result]]:
        return [(rel, st) for rel, st in self.files if self.known[rel] is None]

    def entries(self, digests: Mapping[str, str]) -> list[dict[str, Any]]:
        """The manifest, sorted by path, given the digests of the files not known."""
        entries = [{"path": rel, "kind": "file", "size": st.st_size,
                    "mode": stat.S_IMODE(st.st_mode), "target": "",
                    "sha256": self.known[rel] or digests[rel]} for rel, st in self.files]
        entries += [{"path": rel, "kind": "symlink", "size": 0, "mode": 0o777, "sha256": "",
                     "target": target} for rel, target in self.links.items()]
        return sorted(entries, key=lambda e: e["path"])

    def forget_the_rest(self, cache: HashCache, *, save: bool = True) -> None:
        """Drop cache entries of files no longer in the folder; save the cache (unless
        the caller saves it later)."""
        cache.prune(self.root, [self.base + rel for rel in self.known])
        if save:
            cache.flush()


def survey(root: Path, *, cache: HashCache, extra_ignores: Sequence[str] = ()) -> Survey:
    """List folder `root` and look its files up in the hash cache (see `scan`)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise NaiError(f"{root} is not a folder")
    files, links, problems = _walk(root, extra_ignores)
    for path in escaping_links(links):
        problems.append((path, f"symlink points outside the folder (to {links[path]!r}) or "
                               "loops; make it point inside or add it to .naiignore"))
    if problems:
        raise refusal(sorted(problems), f"cannot send {root}")
    cache.preload(root)
    base = f"{root}/"
    known = {rel: cache.lookup(base + rel, st) for rel, st in files}
    return Survey(root, files, known, links)


def scan(root: Path, *, cache: HashCache, extra_ignores: Sequence[str] = (),
         progress: ProgressFactory | None = None) -> list[dict[str, Any]]:
    """The manifest of folder `root`: one entry per file and symlink, sorted by path.

    Honours `.gitignore` and `.naiignore` (root and nested) and `extra_ignores`
    (gitignore patterns relative to root, checked first); `.git/` is always skipped.
    Unchanged files are not read again (see HashCache). Raises NaiError naming the
    paths a server would refuse (symlinks leaving the folder, unusable names).
    """
    folder = survey(root, cache=cache, extra_ignores=extra_ignores)
    unread = folder.unread()
    to_read = sum(st.st_size for _, st in unread)
    meter = (progress or auto_progress())("hashing", to_read) if to_read else SilentMeter()
    try:
        digests = {rel: read_digest(cache, folder.base + rel, st, meter) for rel, st in unread}
    finally:
        meter.close()
    folder.forget_the_rest(cache)
    return folder.entries(digests)


def read_digest(cache: HashCache, path: str, st: os.stat_result, meter: Meter) -> str:
    with _reading(path):
        return cache.digest(path, st, meter.advance)


def read_content(cache: HashCache, path: str, st: os.stat_result,
                 meter: Meter) -> tuple[str, bytes]:
    """Digest and bytes of a small file about to be sent: read once, not twice."""
    with _reading(path):
        return cache.read(path, st, meter.advance)


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """A file that cannot be read: an error that says what to do."""
    try:
        yield
    except FileNotFoundError as exc:
        raise changed(path) from exc
    except OSError as exc:
        raise NaiError(f"cannot read {path}: {exc.strerror}; fix its permissions or add it "
                       "to .naiignore") from exc


def select(entries: Iterable[TreeEntryModel], prefix: str) -> list[TreeEntryModel]:
    """Entries at or under `prefix` (a file or folder path); "" selects everything."""
    prefix = prefix.strip("/")
    if not prefix:
        return list(entries)
    return [e for e in entries if e.path == prefix or e.path.startswith(prefix + "/")]
