"""Pulling a tree into a folder (DESIGN §6): only entries that differ are fetched, in
one streamed tar, and each is verified and written atomically, never outside the folder."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from nai_server.protocol import (
    ConnectionFailed,
    NaiError,
    TreeEntryModel,
    TreeInfo,
    error_from_body,
    path_problem,
)
from nai_tui.remote.client import ServerClient
from nai_tui.sync.hashcache import CHUNK, HashCache
from nai_tui.sync.progress import Meter, ProgressFactory, SilentMeter, auto_progress
from nai_tui.sync.scan import escaping_links, refusal, select

log = logging.getLogger("nai.sync")

RETRIES = 3


@dataclass(frozen=True)
class PullResult:
    """What a pull did: files and links written, entries already right, and the bytes of
    file content received."""

    downloaded: int
    skipped: int
    bytes: int


def _archive(client: ServerClient, tree_id: str, paths: list[str]
             ) -> Generator[bytes, None, None]:
    """The tar of exactly `paths` of a tree (POST /v1/trees/{id}/archive), streamed."""
    if not getattr(client, "_checked", False):
        client.check_version()
    try:
        with client.http.stream("POST", f"/v1/trees/{tree_id}/archive", json={"paths": paths},
                                timeout=httpx.Timeout(30.0, read=None)) as response:
            if response.status_code >= 400:
                response.read()
                try:
                    body = response.json()
                except ValueError:
                    body = None
                raise error_from_body(response.status_code, body)
            yield from response.iter_bytes(CHUNK)
    except NaiError:
        raise
    except (httpx.TransportError, OSError) as exc:
        raise ConnectionFailed(f"{client.name}: {exc}") from exc


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (what tarfile's stream mode reads)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._left = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            self._left = next(self._chunks, b"")
            if not self._left:
                return 0
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class _Puller:
    """One pull into `dest`: decides what is missing, then writes it safely."""

    def __init__(self, dest: Path, cache: HashCache) -> None:
        self.dest, self.cache = dest, cache
        self.sure_dirs: set[str] = {""}
        self.written = self.received = 0
        self.meter: Meter = SilentMeter()

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
        fd, tmp = tempfile.mkstemp(dir=self._parent(first.path), prefix=".nai-pull-")
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                while piece := data.read(CHUNK):
                    hasher.update(piece)
                    out.write(piece)
                    self.received += len(piece)
                    self.meter.advance(len(piece))
                os.fchmod(out.fileno(), first.mode)
            if hasher.hexdigest() != first.sha256:
                raise NaiError(f"{first.path}: the server sent content that does not match "
                               "the tree; run `nai-admin check` on the server")
            os.utime(tmp, ns=(mtime * 10**9, mtime * 10**9))
            for e in group[1:]:  # same content at other paths: copy locally
                self._copy(tmp, e, mtime)
            self._commit(tmp, first)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _copy(self, source: str, e: TreeEntryModel, mtime: int) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._parent(e.path), prefix=".nai-pull-")
        try:
            with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
                while piece := src.read(CHUNK):
                    out.write(piece)
                os.fchmod(out.fileno(), e.mode)
            os.utime(tmp, ns=(mtime * 10**9, mtime * 10**9))
            self._commit(tmp, e)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _commit(self, tmp: str, e: TreeEntryModel) -> None:
        final = self.dest / e.path
        os.replace(tmp, final)
        self.cache.remember(final, os.lstat(final), e.sha256)
        self.written += 1

    def link(self, e: TreeEntryModel) -> None:
        tmp = self._parent(e.path) / f".nai-pull-{os.getpid()}-{Path(e.path).name}"
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
         retries: int = RETRIES, sleep: Callable[[float], None] = time.sleep) -> PullResult:
    """Write a tree (or its part at `paths_prefix`) into folder `dest`.

    Entries keep their full tree paths under `dest`. Files already there with the
    right content are not downloaded (only their mode is fixed); the others come in
    one tar request and are written atomically. Local files not in the tree are left
    alone. `cache=None` uses the default hash cache.
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
    puller = _Puller(dest, hashes)
    make = progress or auto_progress()
    try:
        hashes.preload(dest)
        for attempt in range(retries + 1):
            try:
                _pull_once(client, info.id, entries, puller, make)
                break
            except ConnectionFailed as exc:
                if attempt == retries:
                    raise
                delay = min(2.0 ** attempt, 30.0)
                log.warning("download interrupted (%s); resuming in %.0f s", exc, delay)
                sleep(delay)
    finally:
        hashes.flush()
        if own:
            hashes.close()
    return PullResult(puller.written, len(entries) - puller.written, puller.received)


def _pull_once(client: ServerClient, tree_id: str, entries: Sequence[TreeEntryModel],
               puller: _Puller, make: ProgressFactory) -> None:
    """One pass: skip what is right, download and write the rest."""
    wanted: dict[str, list[TreeEntryModel]] = {}  # digest -> entries to write with it
    links: list[TreeEntryModel] = []
    for e in entries:
        if puller.is_current(e, puller.local(e.path)):
            continue
        if e.kind == "symlink":
            links.append(e)
        else:
            wanted.setdefault(e.sha256, []).append(e)
    by_path = {group[0].path: group for group in wanted.values()}
    if by_path:
        puller.meter = make("downloading", sum(g[0].size for g in wanted.values()))
        chunks = _archive(client, tree_id, list(by_path))
        try:
            with tarfile.open(fileobj=_ChunkReader(chunks), mode="r|") as tar:
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
            puller.meter.close()
        if by_path:
            raise NaiError(f"the server's archive lacked {next(iter(by_path))!r}")
    for e in links:
        puller.link(e)
