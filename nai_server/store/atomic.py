"""A TinyDB storage that never leaves a half-written file behind.

TinyDB's default JSONStorage rewrites the file in place and truncates it: a crash
in that window leaves unreadable JSON. This storage keeps the data in memory and
replaces the file atomically on every write: temp file, fsync, rename, fsync of
the directory. A write that returns has reached the disk.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import orjson
from tinydb.storages import Storage


class StateUnreadable(Exception):
    """A state file exists but cannot be parsed; the daemon refuses to start."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"state file {path} is unreadable ({reason}); the daemon will not start and will "
            f"not overwrite it. Restore it from a backup or move it aside to start afresh."
        )
        self.path = path


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_libc: Any = None


def syncfs(path: Path) -> None:
    """Flush everything written on the file system holding `path` (Linux syncfs(2));
    cheaper than one fsync per file for a batch of new files. Falls back to sync()."""
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util

        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if getattr(_libc, "syncfs", None) is None or _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_json_file(path: Path) -> Any:
    """Parse a JSON state file, or raise StateUnreadable naming it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StateUnreadable(path, exc.strerror or str(exc)) from exc
    try:
        return orjson.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateUnreadable(path, f"invalid JSON: {exc}") from exc


class CommitFailed(Exception):
    """A write could not be made durable; it was rolled back with the others pending."""


class AtomicJSONStorage(Storage):
    """TinyDB storage: whole-file JSON, cached in memory, replaced atomically.

    With `group_commit`, a write only changes memory; `commit()` (called by the
    owner of `lock` after releasing it, see `CommitLock`) makes everything written
    so far durable in one rewrite and one fsync. Writers that arrive while a flush
    is in progress share the next one, so concurrent requests do not queue for an
    fsync each. Without it, every write is flushed before it returns.
    """

    def __init__(self, path: str | Path, group_commit: bool = False,
                 lock: threading.RLock | None = None) -> None:
        self.path = Path(path)
        self.group_commit = group_commit
        self._lock = lock or threading.RLock()  # guards _data against TinyDB's mutations
        self._flush_lock = threading.Lock()
        self._written = 0  # generation of the latest write in memory
        self._flushed = 0  # generation known to be on disk
        self._lost = 0  # writes up to this generation were rolled back by a failed flush
        self._data: dict[str, Any] | None = None
        if self.path.exists():
            data = read_json_file(self.path)
            if not isinstance(data, dict):
                raise StateUnreadable(self.path, "top level is not an object")
            self._data = data

    def read(self) -> dict[str, Any] | None:
        # TinyDB mutates what read() returns and hands it back to write(); keeping
        # one object avoids a deep copy per operation.
        return self._data

    def write(self, data: dict[str, Any]) -> None:
        with self._lock:
            self._data = data
            self._written += 1
        if not self.group_commit:
            self.commit()

    def pending(self) -> int:
        """The generation a caller must see flushed before it acknowledges its writes."""
        return self._written

    def commit(self, upto: int | None = None) -> None:
        """Make writes up to generation `upto` (default: all so far) durable."""
        target = self._written if upto is None else upto
        if target <= self._flushed:  # already on disk (a flush by another writer)
            return
        with self._flush_lock:
            if target <= self._flushed:
                return
            if target <= self._lost:
                raise CommitFailed(f"writing {self.path} failed; the change was not kept")
            with self._lock:
                # orjson: serialising the whole file is most of a write's cost.
                payload = orjson.dumps(self._data or {})
                generation = self._written
            try:
                atomic_write(self.path, payload)
            except BaseException as exc:
                with self._lock:
                    # Memory is ahead of the disk: go back to the last durable state,
                    # and fail every writer whose change is thrown away.
                    self._data = read_json_file(self.path) if self.path.exists() else None
                    self._lost = self._written
                raise CommitFailed(f"writing {self.path} failed: {exc}") from exc
            self._flushed = generation

    def close(self) -> None:
        if self._written > self._flushed:
            self.commit()
        self._data = None


class CommitLock:
    """The service's lock: re-entrant, and when the outermost holder in a thread
    releases it, that thread's writes are committed (group commit) before it goes on
    to acknowledge them. Every use case takes this lock around its store calls."""

    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self._local = threading.local()
        self.storage: AtomicJSONStorage | None = None  # set once the store is open

    def __enter__(self) -> CommitLock:
        self.rlock.acquire()
        depth = getattr(self._local, "depth", 0)
        if depth == 0 and self.storage is not None:
            self._local.seen = self.storage.pending()
        self._local.depth = depth + 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._local.depth -= 1
        upto = 0
        if self._local.depth == 0 and self.storage is not None:
            # Only a holder that wrote waits for the disk; readers go on at once.
            pending = self.storage.pending()
            upto = pending if pending != self._local.seen else 0
        self.rlock.release()
        if upto and self.storage is not None:
            self.storage.commit(upto)
