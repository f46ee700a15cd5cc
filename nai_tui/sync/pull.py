"""Pulling a tree into a folder (DESIGN §6): only entries that differ are fetched, in
one streamed tar, and each is verified and written atomically, never outside the folder.

Local work is never lost: a file that differs from the tree's is replaced only while
it still holds what an earlier pull left there (`HashCache.pulled`); one changed by
hand, or there before any pull, is kept and reported (`PullResult.kept`) unless
`force`. Each file is written to a temporary first (`nai_tui.pull_temps`); one that a
broken connection or a killed pull left behind is resumed from where it stopped, by
the next attempt or the next pull into that folder; other leftovers are removed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import secrets
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nai_server.protocol import (
    ConnectionFailed,
    NaiError,
    TreeEntryModel,
    TreeInfo,
    path_problem,
)
from nai_tui.remote.backoff import TRANSFER_RETRIES, TRANSFERS, Backoff
from nai_tui.remote.client import ServerClient
from nai_tui.sync.hashcache import CHUNK, FileChanged, HashCache
from nai_tui.sync.progress import Meter, ProgressFactory, SilentMeter, auto_progress
from nai_tui.sync.pull_stream import ChunkReader
from nai_tui.sync.pull_stream import archive as _archive
from nai_tui.sync.pull_temps import TAG_LENGTH, Useless, complete, sweep
from nai_tui.sync.pull_temps import temp_prefix as _temp_prefix
from nai_tui.sync.scan import escaping_links, refusal, select

log = logging.getLogger("nai.sync")

RETRIES = TRANSFER_RETRIES
# Read from the tar in pieces this large: what tarfile holds when the connection
# breaks is lost, what reached the temporary is resumed from.
PIECE = 1 << 18


@dataclass(frozen=True)
class Kept:
    """A local file a pull did not overwrite, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class PullResult:
    """What a pull did: files and links written, entries already right, the bytes of
    file content received, local files kept although they differ from the tree, and
    temporaries of interrupted pulls removed."""

    downloaded: int
    skipped: int
    bytes: int
    kept: tuple[Kept, ...] = ()
    stale_removed: int = 0
    resumed: int = 0  # files finished from what an interrupted download had written


class _Puller:
    """One pull into `dest`: decides what is missing, then writes it safely."""

    def __init__(self, dest: Path, cache: HashCache, *, force: bool = False) -> None:
        self.dest, self.cache, self.force = dest, cache, force
        self.sure_dirs: set[str] = {""}
        self.written = self.received = self.stale_removed = self.resumed = 0
        self.kept: dict[str, Kept] = {}
        # (folder, content tag) -> partial downloads of that content, to resume
        self.partials: dict[tuple[str, str], list[str]] = {}
        self.cleaned: set[str] = set()
        self.started = time.time()
        self.meter: Meter = SilentMeter()

    def clean(self, folder: str) -> None:
        """Collect the temporaries interrupted pulls left in dest/`folder` as partials
        to resume, and remove those that are no file's beginning (once a run, and only
        in folders `local` proved to be real ones)."""
        if folder in self.cleaned or folder not in self.sure_dirs:
            return
        self.cleaned.add(folder)
        partials, removed = sweep(self.dest / folder, self.started)
        for tag, path in partials:
            self.partials.setdefault((folder, tag), []).append(path)
        self.stale_removed += removed

    def may_replace(self, e: TreeEntryModel, st: os.stat_result | None) -> bool:
        """Whether the local entry at `e.path`, which differs from `e`, may be replaced:
        yes for anything but a regular file (no content is lost), for a file that
        still holds what a pull left there, and with `force`; else it is kept."""
        if st is None or self.force or not stat.S_ISREG(st.st_mode):
            return True
        path = self.dest / e.path
        last = self.cache.pulled(path)
        if last is None:
            why = "differs from the server's copy and was not written by nai pull"
        else:
            try:
                if self.cache.digest(path, st) == last:
                    return True
            except (PermissionError, FileChanged):
                pass
            why = "changed here since nai pulled it"
        self.kept[e.path] = Kept(e.path, why)
        return False

    def local(self, path: str) -> os.stat_result | None:
        """lstat of dest/path after checking no parent is a symlink or file in the way."""
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in self.sure_dirs:
                continue
            try:
                st = os.lstat(self.dest / parent)
            except FileNotFoundError:
                break
            if not stat.S_ISDIR(st.st_mode):
                raise NaiError(f"{self.dest / parent} is in the way of {path} (the tree has a "
                               "folder there); move it away and pull again")
            self.sure_dirs.add(parent)
        try:
            return os.lstat(self.dest / path)
        except FileNotFoundError:
            return None

    def is_current(self, e: TreeEntryModel, st: os.stat_result | None) -> bool:
        """True if dest already holds `e` (a file's mode is fixed on the way)."""
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise NaiError(f"{self.dest / e.path} is a folder but the tree has a {e.kind} "
                           "there; move it away and pull again")
        if st is None:
            return False
        if e.kind == "symlink":
            return stat.S_ISLNK(st.st_mode) and os.readlink(self.dest / e.path) == e.target
        if not stat.S_ISREG(st.st_mode) or st.st_size != e.size:
            return False
        try:
            if self.cache.digest(self.dest / e.path, st) != e.sha256:
                return False
        except PermissionError:
            return False  # unreadable: replaced by the tree's file
        if stat.S_IMODE(st.st_mode) != e.mode:
            os.chmod(self.dest / e.path, e.mode)
        return True

    def _parent(self, path: str) -> Path:
        target = (self.dest / path).parent
        target.mkdir(parents=True, exist_ok=True)
        return target

    def write(self, group: list[TreeEntryModel], data: io.BufferedReader | Any,
              mtime: int) -> None:
        """Write one blob to every entry of `group`: temp file, verify, then rename."""
        first = group[0]
        fd, tmp = tempfile.mkstemp(dir=self._parent(first.path),
                                   prefix=_temp_prefix(first.sha256))
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                while piece := data.read(PIECE):
                    hasher.update(piece)
                    out.write(piece)
                    self.received += len(piece)
                    self.meter.advance(len(piece))
                os.fchmod(out.fileno(), first.mode)
            if hasher.hexdigest() != first.sha256:
                raise NaiError(f"{first.path}: the server sent content that does not match "
                               "the tree; run `nai-admin check` on the server")
            os.utime(tmp, ns=(mtime * 10**9, mtime * 10**9))
        except (ConnectionFailed, tarfile.TarError):  # cut off: the next attempt resumes
            self._keep_partial(first, tmp)
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._finish(group, tmp, mtime)

    def _keep_partial(self, e: TreeEntryModel, tmp: str) -> None:
        if os.path.exists(tmp) and os.path.getsize(tmp):
            key = (e.path.rpartition("/")[0], e.sha256[:TAG_LENGTH])
            self.partials.setdefault(key, []).append(tmp)
        else:
            Path(tmp).unlink(missing_ok=True)

    def _finish(self, group: list[TreeEntryModel], tmp: str, mtime: int | None) -> None:
        """The verified content in `tmp`: copied to the group's other paths, then put
        in place of the first."""
        try:
            for e in group[1:]:  # same content at other paths: copy locally
                self._copy(tmp, e, mtime)
            self._commit(tmp, group[0])
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def resume(self, client: ServerClient, tree_id: str, group: list[TreeEntryModel]
               ) -> bool:
        """Finish the group's file from a partial download of it, if there is one:
        True when it is in place. The partials not used are removed."""
        first = group[0]
        key = (first.path.rpartition("/")[0], first.sha256[:TAG_LENGTH])
        candidates = sorted(self.partials.pop(key, []), key=_size, reverse=True)
        done = False
        for partial in candidates:
            if not done:
                done = self._resume_one(client, tree_id, group, partial)
            elif Path(partial).exists():
                Path(partial).unlink(missing_ok=True)
                self.stale_removed += 1
        return done

    def _resume_one(self, client: ServerClient, tree_id: str, group: list[TreeEntryModel],
                    partial: str) -> bool:
        first = group[0]
        own = str(Path(partial).parent / f"{_temp_prefix(first.sha256)}{secrets.token_hex(4)}")
        try:
            os.rename(partial, own)  # claims it: a pull running beside this one cannot
        except FileNotFoundError:
            return False
        try:
            complete(client, tree_id, first, own, self._advance)
        except ConnectionFailed:
            self._keep_partial(first, own)
            raise
        except (Useless, NaiError) as exc:  # e.g. a server without ranged reads
            log.debug("not resuming %s (%r); fetching it whole", first.path, exc)
            Path(own).unlink(missing_ok=True)
            return False
        except BaseException:
            Path(own).unlink(missing_ok=True)
            raise
        self._finish(group, own, None)
        self.resumed += 1
        return True

    def _advance(self, n: int, received: bool) -> None:
        self.meter.advance(n)
        if received:
            self.received += n

    def drop_partials(self) -> None:
        """Remove the partial downloads no entry wanted."""
        for paths in self.partials.values():
            for path in paths:
                if Path(path).exists():
                    Path(path).unlink(missing_ok=True)
                    self.stale_removed += 1
        self.partials.clear()

    def _copy(self, source: str, e: TreeEntryModel, mtime: int | None) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._parent(e.path), prefix=_temp_prefix(e.sha256))
        try:
            with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
                while piece := src.read(CHUNK):
                    out.write(piece)
                os.fchmod(out.fileno(), e.mode)
            if mtime is not None:
                os.utime(tmp, ns=(mtime * 10**9, mtime * 10**9))
            self._commit(tmp, e)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _commit(self, tmp: str, e: TreeEntryModel) -> None:
        final = self.dest / e.path
        os.replace(tmp, final)
        self.cache.remember(final, os.lstat(final), e.sha256)
        self.cache.mark_pulled(final, e.sha256)
        self.written += 1

    def link(self, e: TreeEntryModel) -> None:
        tmp = self._parent(e.path) / f"{_temp_prefix()}{Path(e.path).name}"
        tmp.unlink(missing_ok=True)
        os.symlink(e.target, tmp)
        try:
            os.replace(tmp, self.dest / e.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.written += 1


def _check_tree(entries: Sequence[TreeEntryModel]) -> None:
    """Refuse a tree that could write outside dest (a server should never send one)."""
    problems = [(e.path, why) for e in entries if (why := path_problem(e.path)) is not None]
    links = {e.path: e.target for e in entries if e.kind == "symlink"}
    problems += [(p, "symlink points outside the tree") for p in escaping_links(links)]
    if problems:
        raise refusal(problems, "refusing to write this tree")


def pull(client: ServerClient, tree: str | TreeInfo, dest: Path, *, paths_prefix: str = "",
         cache: HashCache | None = None, progress: ProgressFactory | None = None,
         retries: int = RETRIES, sleep: Callable[[float], None] = time.sleep,
         force: bool = False) -> PullResult:
    """Write a tree (or its part at `paths_prefix`) into folder `dest`.

    Entries keep their full tree paths under `dest`. Files already there with the
    right content are not downloaded (only their mode is fixed); the others come in
    one tar request and are written atomically. Local files not in the tree are left
    alone; local files that differ from the tree's and were not left so by a pull are
    kept and listed in the result, unless `force`. `cache=None` uses the default hash
    cache.
    """
    info = client.tree(tree) if isinstance(tree, str) else tree
    entries = select(info.entries, paths_prefix)
    if paths_prefix.strip("/") and not entries:
        raise NaiError(f"tree {info.id} has nothing at {paths_prefix!r}")
    _check_tree(entries)
    dest = Path(dest).absolute()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NaiError(f"cannot make folder {dest}: {exc.strerror}") from exc
    own = cache is None
    hashes = HashCache() if cache is None else cache
    puller = _Puller(dest, hashes, force=force)
    make = progress or auto_progress()
    try:
        hashes.preload(dest)
        backoff = Backoff(TRANSFERS.replace(retries=retries), sleep=sleep, log=log)
        while True:
            try:
                _pull_once(client, info.id, entries, puller, make)
                puller.drop_partials()
                break
            except ConnectionFailed as exc:
                if not backoff.pause(exc, "download interrupted"):
                    raise
    finally:
        hashes.flush()
        if own:
            hashes.close()
    kept = tuple(puller.kept[p] for p in sorted(puller.kept))
    return PullResult(puller.written, len(entries) - puller.written - len(kept),
                      puller.received, kept, puller.stale_removed, puller.resumed)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _pull_once(client: ServerClient, tree_id: str, entries: Sequence[TreeEntryModel],
               puller: _Puller, make: ProgressFactory) -> None:
    """One pass: skip what is right, download and write the rest."""
    wanted: dict[str, list[TreeEntryModel]] = {}  # digest -> entries to write with it
    links: list[TreeEntryModel] = []
    for e in entries:
        st = puller.local(e.path)
        puller.clean(e.path.rpartition("/")[0])
        if puller.is_current(e, st):
            if e.kind == "file":
                puller.cache.mark_pulled(puller.dest / e.path, e.sha256)
            continue
        if not puller.may_replace(e, st):
            continue
        if e.kind == "symlink":
            links.append(e)
        else:
            wanted.setdefault(e.sha256, []).append(e)
    by_path = {group[0].path: group for group in wanted.values()}
    if by_path:
        puller.meter = make("downloading", sum(g[0].size for g in wanted.values()))
        try:
            for path, group in list(by_path.items()):
                if puller.partials and puller.resume(client, tree_id, group):
                    del by_path[path]
            if by_path:
                _fetch(client, tree_id, by_path, puller)
        finally:
            puller.meter.close()
    for e in links:
        puller.link(e)


def _fetch(client: ServerClient, tree_id: str, by_path: dict[str, list[TreeEntryModel]],
           puller: _Puller) -> None:
    """Download the groups' files in one tar and write them."""
    chunks = _archive(client, tree_id, list(by_path))
    try:
        with tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as tar:
            for member in tar:
                group = by_path.pop(member.name, None)
                if group is None or not member.isreg() or member.size != group[0].size:
                    raise NaiError(f"the server sent {member.name!r}, which was not asked "
                                   "for or has the wrong size")
                puller.write(group, tar.extractfile(member), int(member.mtime))
    except tarfile.TarError as exc:
        raise ConnectionFailed(f"the download broke off ({exc})") from exc
    finally:
        chunks.close()
    if by_path:
        raise NaiError(f"the server's archive lacked {next(iter(by_path))!r}")
