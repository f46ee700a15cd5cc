"""Helpers for the sync tests: files with settled mtimes, random bytes, a folder's
snapshot, and a recorder of what each upload carried."""

from __future__ import annotations

import io
import itertools
import os
import random
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nai_tui.remote.client import ServerClient

MiB = 1 << 20
_mtimes = itertools.count(1_600_000_000)


def write(root: Path, rel: str, data: bytes | str, mode: int = 0o644) -> Path:
    """Write a file with a distinct mtime well in the past (settled, as an edit long ago)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    when = next(_mtimes)
    os.utime(path, (when, when))
    return path


def noise(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything under root: files with bytes and mode, symlinks with their target."""
    found: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            else:
                found[rel] = ("file", path.read_bytes(), path.stat().st_mode & 0o777)
    return found


class Uploads:
    """Wraps `client.upload_pack` to record what each upload carried."""

    def __init__(self, client: ServerClient) -> None:
        self.packs: list[bytes] = []
        self._real = client.upload_pack
        client.upload_pack = self  # type: ignore[method-assign]

    def __call__(self, stream: Iterable[bytes]) -> Any:
        data = b"".join(stream)
        self.packs.append(data)
        return self._real([data])

    def names(self, index: int = -1) -> list[str]:
        with tarfile.open(fileobj=io.BytesIO(self.packs[index])) as tar:
            return tar.getnames()

    @property
    def total(self) -> int:
        return sum(len(p) for p in self.packs)



def paths(entries: list[dict[str, Any]]) -> list[str]:
    return [e["path"] for e in entries]

