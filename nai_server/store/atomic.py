"""A TinyDB storage that never leaves a half-written file behind.

TinyDB's default JSONStorage rewrites the file in place and truncates it: a crash
in that window leaves unreadable JSON. This storage keeps the data in memory and
replaces the file atomically on every write: temp file, fsync, rename, fsync of
the directory. A write that returns has reached the disk.

A write that cannot reach the disk (a value JSON cannot hold, ENOSPC, EIO) is not
kept in memory either: the storage goes back to the last state it made durable and
every writer whose change was thrown away gets `CommitFailed`, so memory never runs
ahead of the file and a restart never finds less than what was acknowledged.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from tinydb.storages import Storage

from nai_server.protocol import Invalid, Unavailable


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
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk keeps no half-written copy
        raise
    fsync_dir(path.parent)


def read_json_file(path: Path) -> Any:
    """Parse a JSON state file, or raise StateUnreadable naming it.

    An empty file is damage, not a fresh start: this storage never writes one, and
    taking it as empty state would hand out job ids (and job directories) again."""
    return _parse(path, _read(path))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StateUnreadable(path, exc.strerror or str(exc)) from exc


def _parse(path: Path, raw: bytes) -> Any:
    if not raw.strip():
        raise StateUnreadable(path, "the file is empty")
    try:
        return orjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateUnreadable(path, f"invalid JSON: {exc}") from exc


class CommitFailed(Unavailable):
    """A write could not be made durable; it was rolled back with the others pending."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"the daemon could not save this change ({reason}); nothing was changed. Try "
            f"again; if it keeps failing, an admin should look at the disk holding {path} "
            f"and the daemon's log")


class Unstorable(Invalid):
    """A value the state file cannot hold (an integer beyond 64 bits, a non-string
    key); refused before it reaches memory."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"a value in this request cannot be stored ({reason}); "
                         f"keep numbers within 64 bits")


def check_storable(value: Any) -> None:
    """Raise Unstorable unless `value` serialises to JSON as it is."""
    try:
        orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError
        raise Unstorable(str(exc)) from exc


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
        # Generations thrown away by failed flushes, as sorted (after, upto] ranges:
        # a writer whose last write falls in one must hear that its change was lost,
        # even when a later flush has since moved `_flushed` past it.
        self._lost_after: list[int] = []
        self._lost_upto: list[int] = []
        self._data: dict[str, Any] | None = None
        self._durable: bytes | None = None  # the file's content, to roll back to
        self.rollbacks = 0  # failed commits so far: what was derived from memory is stale
        if self.path.exists():
            raw = _read(self.path)
            data = _parse(self.path, raw)
            if not isinstance(data, dict):
                raise StateUnreadable(self.path, "top level is not an object")
            self._data, self._durable = data, raw

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
        """Make writes up to generation `upto` (default: all so far) durable, or raise
        CommitFailed once they have been rolled back."""
        target = self._written if upto is None else upto
        self._raise_if_lost(target)
        if target <= self._flushed:  # already on disk (a flush by another writer)
            return
        with self._flush_lock:
            self._raise_if_lost(target)
            if target <= self._flushed:
                return
            with self._lock:
                generation = self._written
                try:
                    payload = self._prepare()
                except TypeError as exc:  # a value JSON cannot hold got into memory
                    self._roll_back()
                    raise CommitFailed(self.path, f"a value cannot be stored: {exc}") from exc
            try:
                self._persist(payload)
            except BaseException as exc:
                with self._lock:
                    self._roll_back()
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise CommitFailed(self.path, f"writing {self.path.name} failed: "
                                   f"{reason}") from exc
            self._flushed = generation

    def _prepare(self) -> Any:
        """What to write for the changes in memory (under the lock): the whole file."""
        # orjson: serialising the whole file is most of a write's cost.
        return orjson.dumps(self._data or {})

    def _persist(self, payload: Any) -> None:
        """Make `_prepare`'s payload durable (outside the lock, inside the flush)."""
        atomic_write(self.path, payload)
        self._durable = payload

    def _roll_back(self) -> None:
        """Memory is ahead of the disk: go back to the last durable state and mark
        every write since as lost (the caller holds both locks)."""
        if self._lost_after and self._lost_after[-1] == self._flushed:
            self._lost_upto[-1] = self._written  # the same range, grown: one entry
        else:
            self._lost_after.append(self._flushed)
            self._lost_upto.append(self._written)
        self._data = orjson.loads(self._durable) if self._durable is not None else None
        self.rollbacks += 1

    def _raise_if_lost(self, target: int) -> None:
        # Ranges are sorted and disjoint: each starts at the last flushed generation.
        i = bisect.bisect_left(self._lost_upto, target)
        if i < len(self._lost_upto) and self._lost_after[i] < target:
            raise CommitFailed(self.path, f"writing {self.path.name} failed and the "
                               f"change was rolled back")

    def settled(self) -> bool:
        """Whether memory holds nothing that a failed flush could still take back."""
        rolled_back = bool(self._lost_upto) and self._lost_upto[-1] == self._written
        return self._written == self._flushed or rolled_back

    def close(self) -> None:
        if not self.settled():
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

    # Another holder may take the lock between a writer's release and its flush, and
    # see the writer's change before it is on disk. Most holders only answer requests;
    # one that does what cannot be undone (starting a job's processes) must not act on
    # a change that a failed flush then rolls back.
    SETTLE_TRIES = 50

    @contextlib.contextmanager
    def settled(self) -> Iterator[CommitLock]:
        """Hold the lock with every change in memory already on disk (or rolled back).
        Waits for pending flushes outside the lock; after SETTLE_TRIES rounds of other
        writers slipping in, goes on with what it has rather than starve."""
        for _ in range(self.SETTLE_TRIES):
            self.__enter__()
            storage = self.storage
            if storage is None or storage.settled() or self._local.depth > 1:
                break
            upto = storage.pending()
            self.__exit__(None, None, None)  # nothing of ours to commit: we wrote nothing
            with contextlib.suppress(CommitFailed):  # rolled back: settled as well
                storage.commit(upto)
        else:
            self.__enter__()
        try:
            yield self
        finally:
            self.__exit__(None, None, None)
