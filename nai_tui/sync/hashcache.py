"""`HashCache`: the sha256 of local files, remembered across runs (DESIGN §6).

An entry is keyed by the file's absolute path and trusted only while its size,
mtime_ns and inode are unchanged, so re-syncing an unchanged tree reads no file
contents. It lives in one sqlite database shared by every `nai` process of the user;
sqlite's locking makes concurrent runs safe, and a cache that cannot be used (locked
for long, damaged, read-only disk) only costs speed: syncing never fails because of it.

It also remembers what `nai pull` left at each path (`pulled`), so that a later pull
replaces a file only while it still holds what the server sent (or what matched it):
a file changed by hand since is kept. Without a usable cache, every differing file is
kept (`--force` overwrites).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from nai_server.protocol import NaiError, user_dir

log = logging.getLogger("nai.sync")

# A file modified within this long of being hashed could be modified again without
# its mtime moving (coarse filesystem clocks), so such an entry is not trusted; the
# file is hashed again next time, once it has settled (git's "racily clean" rule).
RACY_NS = 2_000_000_000
CHUNK = 1 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hashes (
    path BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    hashed_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pulled (
    path BLOB PRIMARY KEY,
    sha256 TEXT NOT NULL
) WITHOUT ROWID
"""

StrPath = str | os.PathLike[str]
_Row = tuple[int, int, int, str, int]  # size, mtime_ns, ino, sha256, hashed_ns


class FileChanged(NaiError):
    """A file changed while nai was reading it."""


def default_cache_path() -> Path:
    """`$XDG_CACHE_HOME/nai/hashes.sqlite` (`~/.cache/nai/...` when XDG is unset)."""
    return user_dir("cache") / "hashes.sqlite"


def hash_file(path: StrPath, on_bytes: Callable[[int], None] | None = None
              ) -> tuple[str, os.stat_result]:
    """sha256 of the regular file at `path` and its fstat taken before reading.

    `on_bytes(n)` is told of every piece read. Raises FileChanged if the file is
    modified while being read.
    """
    digest, _, before = _read(path, on_bytes, keep=False)
    return digest, before


def read_file(path: StrPath, on_bytes: Callable[[int], None] | None = None
              ) -> tuple[str, bytes, os.stat_result]:
    """hash_file, and the file's content: for a small file that is sent right after it
    is hashed, so that it is read only once."""
    digest, data, before = _read(path, on_bytes, keep=True)
    assert data is not None
    return digest, data, before


def _read(path: StrPath, on_bytes: Callable[[int], None] | None, *, keep: bool
          ) -> tuple[str, bytes | None, os.stat_result]:
    hasher = hashlib.sha256()
    pieces: list[bytes] = []
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        before = os.fstat(fd)
        if keep:
            while piece := os.read(fd, before.st_size + 1):
                hasher.update(piece)
                pieces.append(piece)
                if on_bytes is not None:
                    on_bytes(len(piece))
        else:
            # Sized to the file: zeroing a 1 MiB buffer cost more than hashing a small one.
            buf = bytearray(min(CHUNK, before.st_size + 1))
            view = memoryview(buf)
            while n := os.readv(fd, [buf]):
                hasher.update(view[:n])
                if on_bytes is not None:
                    on_bytes(n)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if _key(before) != _key(after):
        raise changed(path)
    return hasher.hexdigest(), b"".join(pieces) if keep else None, before


def changed(path: StrPath) -> FileChanged:
    return FileChanged(f"{path} changed while nai was reading it; wait for it to settle or "
                       "add it to .naiignore, then run again")


def _key(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


class HashCache:
    """sha256 of local files by (absolute path, size, mtime_ns, inode).

    `path=None` uses `default_cache_path()`; ":memory:" keeps nothing between runs.
    Lookups of a folder are fast after `preload(folder)`; new entries are written in
    one transaction by `flush()` (also on `close()` and leaving a `with` block).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = default_cache_path() if path is None else path
        self.files_hashed = 0  # files read because the cache could not answer
        self._rows: dict[bytes, _Row] = {}
        self._loaded: dict[bytes, int] = {}  # preloaded folders (b"/abs/dir/"): rows read
        self._pending: dict[bytes, _Row | None] = {}  # None: delete
        self._pulled: dict[bytes, str] = {}  # path -> content a pull left there
        self._pulled_pending: dict[bytes, str] = {}
        self._db = self._open()

    # --- public API -------------------------------------------------------------------

    def digest(self, path: StrPath, st: os.stat_result | None = None,
               on_bytes: Callable[[int], None] | None = None) -> str:
        """The sha256 of the regular file at absolute `path` (lstat `st` if already known),
        read from disk (telling `on_bytes`) only if the cache cannot vouch for it."""
        if st is None:
            st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise NaiError(f"{path} is not a regular file")
        cached = self.lookup(path, st)
        if cached is not None:
            return cached
        digest, seen = hash_file(path, on_bytes)
        self._hashed(path, st, seen, digest)
        return digest

    def read(self, path: StrPath, st: os.stat_result,
             on_bytes: Callable[[int], None] | None = None) -> tuple[str, bytes]:
        """The sha256 and content of the small regular file at absolute `path`, whose
        lstat is `st`: always read from disk, and remembered as `digest` does."""
        if not stat.S_ISREG(st.st_mode):
            raise NaiError(f"{path} is not a regular file")
        digest, data, seen = read_file(path, on_bytes)
        self._hashed(path, st, seen, digest)
        return digest, data

    def _hashed(self, path: StrPath, st: os.stat_result, seen: os.stat_result,
                digest: str) -> None:
        """A file just read: remembered if it is still the one `st` describes."""
        self.files_hashed += 1
        if _key(seen) != _key(st):
            raise changed(path)
        self.remember(path, st, digest)

    def lookup(self, path: StrPath, st: os.stat_result) -> str | None:
        """The remembered digest if the file still has the same size, mtime and inode."""
        row = self._row(os.fsencode(path))
        if row is None:
            return None
        size, mtime_ns, ino, digest, hashed_ns = row
        if (size, mtime_ns, ino) != _key(st) or mtime_ns >= hashed_ns - RACY_NS:
            return None
        return digest

    def remember(self, path: StrPath, st: os.stat_result, digest: str,
                 hashed_ns: int | None = None) -> None:
        """Record that the file at `path`, as described by `st`, hashes to `digest`."""
        when = time.time_ns() if hashed_ns is None else hashed_ns
        row = (st.st_size, st.st_mtime_ns, st.st_ino, digest, when)
        key = os.fsencode(path)
        self._rows[key] = row
        self._pending[key] = row

    def forget(self, path: StrPath) -> None:
        """Drop what is known about `path` (e.g. its content proved different)."""
        key = os.fsencode(path)
        self._rows.pop(key, None)
        self._pending[key] = None

    def pulled(self, path: StrPath) -> str | None:
        """The sha256 of what `nai pull` last left at `path` (written, or found already
        right), or None if it never did: a file there with other content was changed
        by someone else, and a pull must not overwrite it unasked."""
        key = os.fsencode(path)
        if key in self._pulled:
            return self._pulled[key]
        if any(key.startswith(prefix) for prefix in self._loaded) or self._db is None:
            return None
        rows = self._query("SELECT sha256 FROM pulled WHERE path = ?", (key,))
        return str(rows[0][0]) if rows else None

    def mark_pulled(self, path: StrPath, digest: str) -> None:
        """Record that the file at `path` now holds `digest` as a pull left it."""
        key = os.fsencode(path)
        if self._pulled.get(key) != digest:
            self._pulled[key] = self._pulled_pending[key] = digest

    def preload(self, folder: StrPath) -> None:
        """Read every entry under absolute `folder` in one query."""
        prefix = os.fsencode(folder).rstrip(b"/") + b"/"
        if prefix in self._loaded or self._db is None:
            return
        # b"0" is the byte after b"/": the range holds exactly the paths under the folder.
        rows = self._query("SELECT path, size, mtime_ns, ino, sha256, hashed_ns FROM hashes "
                           "WHERE path >= ? AND path < ?", (prefix, prefix[:-1] + b"0"))
        for path, *rest in rows:
            self._rows.setdefault(path, tuple(rest))  # type: ignore[arg-type]
        self._loaded[prefix] = len(rows)
        for path, digest in self._query("SELECT path, sha256 FROM pulled WHERE path >= ? "
                                        "AND path < ?", (prefix, prefix[:-1] + b"0")):
            self._pulled.setdefault(path, digest)  # type: ignore[arg-type]

    def knows_folder(self, folder: StrPath) -> bool:
        """Whether files under absolute `folder` were hashed before (saved or not)."""
        self.preload(folder)
        prefix = os.fsencode(folder).rstrip(b"/") + b"/"
        return self._loaded.get(prefix, 0) > 0 or any(k.startswith(prefix) for k in self._rows)

    def prune(self, folder: StrPath, keep: Iterable[StrPath]) -> None:
        """Forget entries under a preloaded `folder` other than `keep` (files gone)."""
        prefix = os.fsencode(folder).rstrip(b"/") + b"/"
        if prefix not in self._loaded:
            return
        kept = {os.fsencode(p) for p in keep}
        for key in [k for k in self._rows if k.startswith(prefix) and k not in kept]:
            del self._rows[key]
            self._pending[key] = None

    def flush(self) -> None:
        """Write new and dropped entries in one transaction."""
        if not (self._pending or self._pulled_pending) or self._db is None:
            self._pending.clear()
            self._pulled_pending.clear()
            return
        pending, self._pending = self._pending, {}
        pulled, self._pulled_pending = self._pulled_pending, {}
        puts = [(k, *row) for k, row in pending.items() if row is not None]
        drops = [(k,) for k, row in pending.items() if row is None]
        try:
            with self._db:
                self._db.executemany("DELETE FROM hashes WHERE path = ?", drops)
                self._db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?)",
                                     puts)
                self._db.executemany("INSERT OR REPLACE INTO pulled VALUES (?, ?)",
                                     list(pulled.items()))
        except sqlite3.Error as exc:
            log.warning("could not save the hash cache %s (%s); files will be hashed again "
                        "next time", self.path, exc)

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection | None:
        target = str(self.path)
        for attempt in (1, 2):
            try:
                if target != ":memory:":
                    Path(target).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                db = sqlite3.connect(target, timeout=10.0)
                db.executescript(_SCHEMA)
                db.commit()
                return db
            except sqlite3.DatabaseError as exc:
                damaged = not isinstance(exc, sqlite3.OperationalError)
                if damaged and attempt == 1 and target != ":memory:":
                    # A damaged cache is only a cache: start a new one, keep the old aside.
                    log.warning("hash cache %s is damaged (%s); starting a new one", target, exc)
                    try:
                        os.replace(target, target + ".damaged")
                        continue
                    except OSError:
                        pass
                log.warning("hash cache %s unusable (%s); every file will be read", target, exc)
            except OSError as exc:
                log.warning("hash cache %s unusable (%s); every file will be read", target, exc)
            return None
        return None

    def _query(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        if self._db is None:
            return []
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            log.warning("hash cache %s unreadable (%s); every file will be read", self.path, exc)
            return []

    def _row(self, key: bytes) -> _Row | None:
        if key in self._rows:
            return self._rows[key]
        if any(key.startswith(prefix) for prefix in self._loaded) or self._db is None:
            return None
        rows = self._query("SELECT size, mtime_ns, ino, sha256, hashed_ns FROM hashes "
                           "WHERE path = ?", (key,))
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]
