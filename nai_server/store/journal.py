"""An append-only journal of hot job changes beside the hot state file.

Rewriting the whole hot file (a megabyte with a few thousand queued jobs: a rewrite,
two fsyncs) on every group commit held submits under 500/s on a busy machine. A commit
that changed only jobs appends one record instead, the documents of the jobs it
changed (None: removed), and fdatasyncs it: a few hundred bytes and one flush.

The file is a sequence of frames: a 4-byte little-endian length, the CRC-32 of the
payload, the payload (JSON). The first frame names the state file's content it follows
(a BLAKE2b digest of its bytes): records apply only to that very file. A new state file
(written whole when something other than jobs changed, or when the journal grew past
its limit) makes the journal stale at once, without a write, and the next commit starts
a fresh one (written whole, then renamed into place). A stale journal is ignored: the
state file written after it holds all it said.

A kill at any byte can only cut the last frame: it was never acknowledged (its fdatasync
had not returned), so it is dropped and the file cut back to the last whole frame. A bad
frame with whole frames after it is damage, not a cut write: the daemon refuses to start
(StateUnreadable), as for a damaged state file.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import orjson

from nai_server.store import atomic
from nai_server.store.atomic import AtomicJSONStorage, StateUnreadable, read_json_file

_HEAD = struct.Struct("<II")  # length, crc32
MAX_RECORD = 1 << 30
# The journal is folded into a new state file once it holds more than this beyond the
# state file's own size: a start replays at most a few MiB.
JOURNAL_SLACK = 4 << 20


def journal_path(state: Path) -> Path:
    return state.with_name(f"{state.stem}.journal")


def read_state(path: Path) -> dict[str, Any]:
    """The hot state as the daemon would open it: the state file with its journal's
    records applied (read only: a torn last record is left where it is). For tools and
    tests; raises StateUnreadable naming the damaged file."""
    raw = path.read_bytes() if path.exists() else b""
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise StateUnreadable(path, "top level is not an object")
    replay(journal_path(path), raw, data, repair=False)
    return data


def digest(raw: bytes) -> str:
    """What a journal's first frame names: the state file's content."""
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def write_record(fd: int, data: bytes) -> None:
    """Append one frame and flush it to the disk (the one place a record is written)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fdatasync(fd)


def frame(payload: bytes) -> bytes:
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def _frames(raw: bytes, path: Path) -> tuple[list[bytes], int]:
    """The whole frames of a journal and where they end; raises StateUnreadable when a
    bad frame is followed by more than a cut tail."""
    frames, at = [], 0
    while at < len(raw):
        start = at
        if len(raw) - at < _HEAD.size:
            break  # a cut header
        length, crc = _HEAD.unpack_from(raw, at)
        at += _HEAD.size
        end = at + length
        if not length or length > MAX_RECORD or end > len(raw):
            if 0 < length <= MAX_RECORD or not raw[start:].strip(b"\0"):
                at = start
                break  # a cut frame (or zeros a crash left past the end)
            raise StateUnreadable(path, f"a damaged record at byte {start}")
        payload = raw[at:end]
        if zlib.crc32(payload) != crc:
            if end == len(raw) or not raw[start:].strip(b"\0"):
                at = start
                break  # the last frame, half on disk
            raise StateUnreadable(path, f"a damaged record at byte {start}, with "
                                        f"records after it")
        frames.append(payload)
        at = end
    return frames, at


def replay(path: Path, state_raw: bytes, data: dict[str, Any], *,
           repair: bool = True) -> tuple[int, list[bytes]]:
    """Apply to `data` (the state file's content, parsed from `state_raw`) the records
    of the journal at `path` that follow that very content; cut a torn last frame off
    the file (`repair`). Returns the journal's good length (0: none, or stale) and the
    records applied."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0, []
    except OSError as exc:
        raise StateUnreadable(path, exc.strerror or str(exc)) from exc
    frames, good = _frames(raw, path)
    if not frames:
        return 0, []
    try:
        head = orjson.loads(frames[0])
        follows = head.get("follows") if isinstance(head, dict) else None
    except orjson.JSONDecodeError as exc:
        raise StateUnreadable(path, f"its first record is not JSON: {exc}") from exc
    if follows != digest(state_raw):
        return 0, []  # stale: the state file was written whole after it
    records = frames[1:]
    for payload in records:
        apply(data, decode(payload, path))
    if good < len(raw) and repair:
        with open(path, "r+b") as f:  # the torn frame was never acknowledged
            f.truncate(good)
            os.fsync(f.fileno())
    return good, records


def decode(payload: bytes, path: Path) -> dict[str, Any]:
    try:
        record = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise StateUnreadable(path, f"a record is not JSON: {exc}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("jobs"), dict):
        raise StateUnreadable(path, "a record holds no job changes")
    return record


def apply(data: dict[str, Any], record: dict[str, Any]) -> None:
    jobs = data.setdefault("jobs", {})
    for key, doc in record["jobs"].items():
        if doc is None:
            jobs.pop(key, None)
        else:
            jobs[key] = doc


def record(jobs: dict[str, Any], keys: set[str]) -> bytes:
    """The payload of a commit that changed these job keys."""
    return orjson.dumps({"jobs": {k: jobs.get(k) for k in sorted(keys)}})


class Journal:
    """The open journal file of one state file: appends, each flushed before it returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.follows: str | None = None  # digest of the state file it applies to
        self.size = 0  # bytes of whole frames in the file
        self._fd: int | None = None

    def adopt(self, follows: str, size: int) -> None:
        """Go on appending to the file found at start (`size` good bytes), if it
        follows the state file as it is (`follows`)."""
        if size:
            self.follows, self.size = follows, size

    def append(self, state_digest: str, payload: bytes) -> None:
        """Make one record durable. A journal that follows an older state file is
        replaced by a new one (written whole, then renamed) that starts with it."""
        data = frame(payload)
        if self.follows != state_digest:
            self._start(state_digest, data)
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            write_record(self._fd, data)
        except BaseException:
            self._cut_back()
            raise
        self.size += len(data)

    def _start(self, state_digest: str, first: bytes) -> None:
        self.close()
        head = frame(orjson.dumps({"follows": state_digest}))
        atomic.atomic_write(self.path, head + first)
        self.follows, self.size = state_digest, len(head) + len(first)

    def _cut_back(self) -> None:
        """After a failed append: the file back to its whole frames, or, failing that,
        never appended to again (the next commit writes a new one)."""
        try:
            assert self._fd is not None
            os.ftruncate(self._fd, self.size)
        except (OSError, AssertionError):
            self.follows = None
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.follows, self.size = None, 0


class JournaledStorage(AtomicJSONStorage):
    """The hot state file with its journal: a commit that changed only jobs (told by
    `write_jobs`) appends a record; any other write (through TinyDB's tables) or a
    journal past its slack writes the state file whole, which makes the journal stale.
    A failed commit rolls memory back to the state file plus the records made durable."""

    def __init__(self, path: str | Path, group_commit: bool = False,
                 lock: threading.RLock | None = None) -> None:
        super().__init__(path, group_commit, lock)
        self.journal = Journal(journal_path(self.path))
        self._dirty: set[str] = set()  # job keys changed since the last commit
        self._full = False  # something other than jobs changed: write the file whole
        self._records: list[bytes] = []  # journaled since the state file: to roll back to
        self._digest: str | None = None
        if self._durable is not None and self._data is not None:
            self._digest = digest(self._durable)
            good, self._records = replay(self.journal.path, self._durable, self._data)
            self.journal.adopt(self._digest, good)

    def write(self, data: dict[str, Any]) -> None:
        with self._lock:
            self._full = True
        super().write(data)

    def write_jobs(self, keys: set[str]) -> None:
        """The documents of these hot job keys changed in what `read()` returned."""
        with self._lock:
            self._dirty |= keys
            self._written += 1
        if not self.group_commit:
            self.commit()

    def _prepare(self) -> Any:
        # Only a journal that follows this state file counts: a stale one, however
        # long, is replaced by the next record.
        grown = (self.journal.follows == self._digest
                 and self.journal.size > JOURNAL_SLACK + len(self._durable or b""))
        if self._full or self._digest is None or grown:
            self._full = False
            self._dirty.clear()
            return ("state", super()._prepare())
        jobs = (self._data or {}).get("jobs", {})
        payload = record(jobs, self._dirty)
        self._dirty.clear()
        return ("journal", payload)

    def _persist(self, payload: Any) -> None:
        kind, data = payload
        if kind == "state":
            super()._persist(data)
            self._digest, self._records = digest(data), []
        else:
            assert self._digest is not None
            self.journal.append(self._digest, data)
            self._records.append(data)

    def _roll_back(self) -> None:
        super()._roll_back()
        if self._data is not None:
            for payload in self._records:
                apply(self._data, decode(payload, self.journal.path))
        self._dirty.clear()
        self._full = True  # the next commit writes the file whole

    def close(self) -> None:
        """Fold the journal into the state file, so that what is on disk after a clean
        stop is one file (and an older version reads all of it)."""
        if self._data is not None and self._records:
            with self._lock:
                self._full = True
                self._written += 1
        if self._data is not None:
            super().close()
        if not self._records:
            self.journal.remove()
        self.journal.close()
