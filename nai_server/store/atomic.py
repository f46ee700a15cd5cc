"""A TinyDB storage that never leaves a half-written file behind.

TinyDB's default JSONStorage rewrites the file in place and truncates it: a crash
in that window leaves unreadable JSON. This storage keeps the data in memory and
replaces the file atomically on every write: temp file, fsync, rename, fsync of
the directory. A write that returns has reached the disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
        return json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateUnreadable(path, f"invalid JSON: {exc}") from exc


class AtomicJSONStorage(Storage):
    """TinyDB storage: whole-file JSON, cached in memory, replaced atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
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
        try:
            atomic_write(self.path, json.dumps(data, separators=(",", ":")).encode())
        except BaseException:
            # Memory may now be ahead of the disk: reload the last durable state.
            self._data = read_json_file(self.path) if self.path.exists() else None
            raise
        self._data = data

    def close(self) -> None:
        self._data = None
