"""Packed uploads as the client makes them: a ustar stream of blobs, each a member
named by its sha256 (or `unnamed`, for the server to name), read lazily or sent from
bytes already read. The server's side is nai_server.store.pack."""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable, Generator, Iterable
from pathlib import Path

from nai_server.protocol import UNNAMED_BLOB, NaiError
from nai_tui.sync.hashcache import CHUNK, HashCache, changed

_BLOCK = tarfile.BLOCKSIZE
_USTAR_MAX = 8**11
_PADDING = bytes(_BLOCK)


def member_size(size: int) -> int:
    """Bytes of one blob's member in a pack: its header, its data padded to a block."""
    return _BLOCK + size + (-size % _BLOCK)


def pack_size(sizes: Iterable[int]) -> int:
    """Bytes of the ustar pack holding blobs of these sizes."""
    return sum(map(member_size, sizes)) + 2 * _BLOCK


def blob_header(digest: str, size: int) -> bytes:
    """The ustar header of one blob member (named by its digest, mode 0444, mtime 0).

    Built from a fixed template: tarfile.TarInfo.tobuf fills and checks every field and
    was most of the client's cost of packing thousands of small files."""
    if size >= _USTAR_MAX:
        # ustar sizes stop below 8 GiB; GNU headers (base-256 size) carry larger blobs.
        info = tarfile.TarInfo(digest)
        info.size, info.mode, info.mtime = size, 0o444, 0
        return info.tobuf(tarfile.GNU_FORMAT)
    header = bytearray(_HEADER_TEMPLATE)
    header[0:64] = digest.encode("ascii").ljust(64, b"\0")
    header[124:136] = b"%011o\0" % size
    header[148:156] = b"%06o\0 " % (sum(header) - sum(header[148:156]) + 256)
    return bytes(header)


def _template() -> bytes:
    info = tarfile.TarInfo("0" * 64)
    info.size, info.mode, info.mtime = 0, 0o444, 0
    return info.tobuf(tarfile.USTAR_FORMAT)


_HEADER_TEMPLATE = _template()


class Dropped(Exception):
    """An upload stopped sending a blob the server turned out to have (see `Drops`)."""


class Drops:
    """Blobs an upload may abandon mid-way: files sent before their digest was known.
    The hasher `drop`s one once the server says it has it; the pack then ends early."""

    def __init__(self) -> None:
        self.watched: set[Path] = set()
        self.dropped: set[Path] = set()

    def drop(self, path: Path) -> None:
        self.dropped.add(path)


Blob = tuple[str, Path, int, "bytes | None"]  # digest, file, size, content if already read


def pack_blobs(blobs: Iterable[Blob], *, cache: HashCache | None = None,
               on_bytes: Callable[[int], None] | None = None,
               drops: Drops | None = None) -> Generator[bytes, None, None]:
    """The ustar pack of (digest, file, size, content) blobs, in chunks of about 1 MiB.

    A blob whose content is given is sent as it is (it was read, and hashed, once); the
    others are read from their files lazily.

    A file must not change while it is packed: its size, mtime and inode are compared
    before and after it is read, and one that changed raises FileChanged before its
    last bytes are sent. A file the scan just hashed is not hashed again when `cache`
    vouches for it (same size, mtime and inode, outside the racy window); the server
    verifies every blob anyway. The others are hashed as they are read, and one that
    no longer matches its digest is forgotten by `cache`.

    A blob whose digest is `UNNAMED_BLOB` is sent unhashed, for the server to name.
    One `drops` watches starts a chunk of its own, and once it is dropped the pack
    raises Dropped: what came before it has been sent whole.
    """
    buf = bytearray()  # held until a chunk is full; one object, emptied as it goes
    watching, dropped = (drops.watched, drops.dropped) if drops is not None else (set(), set())
    for digest, path, size, data in blobs:
        if data is not None:
            if len(buf) >= CHUNK:
                yield _take(buf, on_bytes)
            buf += blob_header(digest, size)
            buf += data
            buf += _PADDING[:-size % _BLOCK]
            continue
        watched = path in watching
        if watched and buf:
            yield _take(buf, on_bytes)
        yield from _file_member(buf, digest, path, size, cache, on_bytes,
                                dropped if watched else None)
    buf += bytes(2 * _BLOCK)
    yield _take(buf, on_bytes)


def _take(buf: bytearray, on_bytes: Callable[[int], None] | None) -> bytes:
    """What `buf` holds, to send; `buf` is left empty and the meter told."""
    chunk = bytes(buf)
    buf.clear()
    if on_bytes is not None:
        on_bytes(len(chunk))
    return chunk


def _file_member(buf: bytearray, digest: str, path: Path, size: int,
                 cache: HashCache | None, on_bytes: Callable[[int], None] | None,
                 dropped: set[Path] | None) -> Generator[bytes, None, None]:
    """One blob read from its file into the pack (see pack_blobs). Full chunks go out
    as they fill, but the member's last bytes stay in `buf` until the file is known
    unchanged; `dropped` (when the blob is watched) is checked before each read."""
    sent = 0  # of this member, for the meter when it is dropped
    buf += blob_header(digest, size)
    left = size
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise NaiError(f"cannot read {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb", buffering=0) as f:
        before = os.fstat(fd)
        trusted = digest == UNNAMED_BLOB or (
            cache is not None and cache.lookup(path, before) == digest)
        hasher = None if trusted else hashlib.sha256()
        if before.st_size != size:
            raise changed(path)
        while left:
            if dropped is not None and path in dropped:
                if on_bytes is not None:
                    on_bytes(member_size(size) - sent)
                raise Dropped(path)
            # Send a full buffer only while this member has bytes still to read:
            # its last bytes stay held until it is known unchanged.
            if len(buf) >= CHUNK:
                chunk = _take(buf, on_bytes)
                sent += len(chunk)
                yield chunk
            direct = not buf and left > CHUNK  # a whole chunk, sent as read: no copy
            piece = f.read(CHUNK if direct else min(CHUNK - len(buf), left))
            if not piece:
                raise changed(path)
            if hasher is not None:
                hasher.update(piece)
            left -= len(piece)
            if not direct:
                buf += piece
                continue
            if on_bytes is not None:
                on_bytes(len(piece))
            sent += len(piece)
            yield piece
        after = os.fstat(fd)
    if (after.st_size, after.st_mtime_ns, after.st_ino) != (
            before.st_size, before.st_mtime_ns, before.st_ino) or (
            hasher is not None and hasher.hexdigest() != digest):
        if cache is not None:
            cache.forget(path)
        raise changed(path)
    buf += _PADDING[:-size % _BLOCK]
