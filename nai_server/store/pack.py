"""Packed uploads: an incremental receiver for a ustar stream of blobs named by digest
(or `unnamed`: stored under the digest the content hashes to).

Also BlobSink, the hashing temp-file writer every incoming blob goes through. The
receiver stores through the BlobStore it is given (``BlobStore.receiver`` makes one):
its public seams ``refresh``, ``held``, ``blob_path_trusted``, ``new_sink``, ``sync``, ``publish``
and ``claims``; blobs.py imports this module, never the other way round at run time.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import tarfile
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from nai_server.core.trees import UNNAMED_BLOB, is_digest

if TYPE_CHECKING:
    from nai_server.store.blobs import BlobStore

BLOCK = tarfile.BLOCKSIZE
# A batch of received blobs is made durable together when it reaches either size.
FLUSH_BLOBS = 1024
FLUSH_BYTES = 256 << 20
SKIP_CHECK_BYTES = 1 << 20  # from this size, a blob already stored is not written again
_ZERO_BLOCK = bytes(BLOCK)


class PackError(ValueError):
    """A packed upload is malformed or a blob in it does not match its name."""


class BlobSink:
    """A blob being received: a temp file plus a running sha256 (hash only if tmp_dir=None)."""

    # Unique temp names without mkstemp's random retries: pid + a counter.
    _counter = itertools.count()

    def __init__(self, tmp_dir: Path | None) -> None:
        self.hasher = hashlib.sha256()
        self.size = 0
        self.path: str | None = None  # a string: pathlib costs show at thousands of blobs
        self._fd: int | None = None
        if tmp_dir is not None:
            name = f"{tmp_dir}/blob-{os.getpid()}-{next(self._counter)}"
            # Created read-only: the open descriptor may still write; no fchmod later.
            self._fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
            self.path = name

    def write(self, data: bytes | memoryview) -> None:
        self.hasher.update(data)
        self.size += len(data)
        if self._fd is not None:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]

    def seal(self, *, sync: bool = True) -> None:
        """Close, ready to be renamed into place; `sync=False` leaves the flush to disk
        to the caller (one syncfs for a batch of blobs)."""
        assert self._fd is not None
        if sync:
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None


class PackReceiver:
    """Receives a packed upload: a ustar stream of regular files named by their digest.

    Parsed incrementally (feed any chunk sizes); each member is streamed to a temp
    file while hashed and moved into place only once its digest is verified. Blobs
    completed before a failure stay stored, so a retry sends only what is missing;
    a partly received blob never appears. Use as a context manager to abort on error.

    With a `holder` (a user name), every verified blob is claimed for them: a claim is
    written once the blob is in place, before the syncfs that makes both durable. A
    blob already stored is not stored twice: the copy received replaces it (same
    bytes). Only a large blob the sender already holds (or any, for one who may see
    every blob: `sees_all`, the default without a holder) is hashed without being
    written: skipping the write for another user's blob would tell, by the time the
    upload takes, that someone stored those bytes.
    """

    def __init__(self, store: BlobStore, max_blob_size: int, holder: str | None = None,
                 *, sees_all: bool | None = None) -> None:
        self._store = store
        self._max = max_blob_size
        self._holder = holder
        self._sees_all = holder is None if sees_all is None else sees_all
        self._header = bytearray()
        self._sink: BlobSink | None = None
        self._name = ""
        self._size = self._left = self._pad = 0
        self._zero_blocks = 0
        self._state = "header"  # header | data | pad | end | done | failed
        self.received: list[str] = []  # digests verified so far, in stream order
        # Verified blobs waiting for one syncfs, then their renames: an fsync per blob
        # (two, with its directory) cost more than the rest of receiving a small file.
        self._pending: list[tuple[BlobSink, str]] = []
        self._pending_digests: list[str] = []  # their digests, claimed once published
        self._pending_bytes = 0
        # The batch before, whose syncfs a thread runs while the next batch arrives; it
        # is renamed into place once that is done. The GIL-free wait is all the thread
        # does: renaming there too contended with this thread for the GIL.
        self._syncing: tuple[threading.Thread, list[tuple[BlobSink, str]], list[str]
                             ] | None = None
        self._sync_error: BaseException | None = None
        self._unsynced_names = False  # blobs renamed into place since the last syncfs began

    def __enter__(self) -> PackReceiver:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._state != "done":
            self.abort()

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Consume the next piece of the stream; PackError if it is malformed."""
        if self._state in ("failed", "done"):
            raise PackError(f"this pack upload is already {self._state}")
        view = memoryview(chunk).cast("B")
        try:
            while view and self._state != "end":  # after the end marker: record padding
                if self._state == "header":
                    need = BLOCK - len(self._header)
                    self._header += view[:need]
                    view = view[need:]
                    if len(self._header) == BLOCK:
                        self._on_header(bytes(self._header))
                        self._header.clear()
                elif self._state == "data":
                    assert self._sink is not None
                    piece = view[: self._left]
                    self._sink.write(piece)
                    self._left -= len(piece)
                    view = view[len(piece) :]
                    if self._left == 0:
                        self._on_member_end()
                else:  # pad
                    skip = min(self._pad, len(view))
                    self._pad -= skip
                    view = view[skip:]
                    if self._pad == 0:
                        self._state = "header"
        except BaseException:
            self.abort()
            raise

    def finish(self) -> list[str]:
        """End of the stream: the unique digests received (stored or already present)."""
        # One zero block then EOF is accepted, as tar itself accepts it.
        ended = self._state == "end" or (
            self._state == "header" and self._zero_blocks == 1 and not self._header
        )
        if not ended:
            if self._state == "data":
                why = f"pack ended inside blob {self._name} ({self._size - self._left} of "
                why += f"{self._size} bytes)"
            elif self._state in ("failed", "done"):
                why = f"this pack upload is already {self._state}"
            else:
                why = "pack ended without the end-of-archive marker"
            self.abort()
            raise PackError(f"{why}; blobs received in full are kept, send the rest again")
        self._flush()
        self._state = "done"
        return list(dict.fromkeys(self.received))

    def abort(self) -> None:
        """Keep the blobs verified so far, drop the one in progress (its temp file); the
        receiver cannot be used again."""
        if self._sink is not None:
            self._sink.discard()
            self._sink = None
        try:
            self._flush()
        finally:
            if self._state != "done":
                self._state = "failed"

    def _flush(self) -> None:
        """Make the verified blobs durable and visible under their digests."""
        try:
            self._flush_batch()
            self._publish_synced()
        finally:
            if self._unsynced_names:  # the last batch's
                self._unsynced_names = False
                self._store.sync()

    def _flush_batch(self) -> None:
        """A batch is complete: rename the one before into place (its bytes are on disk
        once its syncfs is over), then start this one's syncfs in a thread. That syncfs
        also makes the names just given durable."""
        self._publish_synced()
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        digests, self._pending_digests = self._pending_digests, []
        if not batch:
            return

        def sync() -> None:
            try:
                self._store.sync()
            except BaseException as exc:  # handed to the receiving thread
                self._sync_error = exc

        thread = threading.Thread(target=sync, name="nai-blob-sync", daemon=True)
        thread.start()
        self._syncing = (thread, batch, digests)
        self._unsynced_names = False

    def _publish_synced(self) -> None:
        if self._syncing is None:
            return
        thread, batch, digests = self._syncing
        self._syncing = None
        thread.join()
        if self._sync_error is not None:
            error, self._sync_error = self._sync_error, None
            for sink, _ in batch:
                sink.discard()
            raise error
        self._unsynced_names = True
        self._store.publish(batch)
        if self._holder is not None:  # after the blobs: a claim never names a missing blob
            self._store.claims.record(self._holder, digests)

    def _on_header(self, block: bytes) -> None:
        if block == _ZERO_BLOCK:
            self._zero_blocks += 1
            if self._zero_blocks == 2:
                self._state = "end"
            return
        if self._zero_blocks:
            raise PackError("data after an end-of-archive block")
        name, kind, size = _parse_header(block)
        if kind not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise PackError(
                f"member {name!r} is not a regular file (type {kind!r}); "
                "send a plain ustar stream of files named by their sha256"
            )
        unnamed = name == UNNAMED_BLOB
        if not unnamed and not is_digest(name):
            raise PackError(f"member {name!r} is not named by its sha256 (64 lowercase hex) "
                            f"nor {UNNAMED_BLOB!r}")
        if not 0 <= size <= self._max:
            raise PackError(f"blob {name} is {size} bytes, the limit is {self._max}")
        self._name, self._size, self._left = name, size, size
        self._pad = -size % BLOCK
        # Already stored: verify the bytes but do not write them again. Small blobs are
        # written without asking (the client asked first, so they are new): for
        # thousands of small files the stat cost more than the write it might save.
        self._sink = self._store.new_sink(
            hash_only=not unnamed and size >= SKIP_CHECK_BYTES and self._known(name))
        if size == 0:
            self._on_member_end()
        else:
            self._state = "data"

    def _known(self, digest: str) -> bool:
        """The blob is stored, as far as the sender may know (then refreshed: the
        sender's tree will name it, and gc keeps it for its grace period)."""
        if self._sees_all or self._holder is None:
            return self._store.refresh(digest)
        return self._store.held(self._holder, digest)

    def _on_member_end(self) -> None:
        sink, self._sink = self._sink, None
        assert sink is not None
        digest = sink.hasher.hexdigest()
        if digest != self._name and self._name != UNNAMED_BLOB:
            sink.discard()
            raise PackError(f"blob {self._name}: content hashes to {digest}")
        if sink.path is not None:
            sink.seal(sync=False)
            self._pending_bytes += sink.size
        # A blob already stored (only hashed) joins the batch too, for its claim.
        self._pending.append((sink, self._store.blob_path_trusted(digest)))
        self._pending_digests.append(digest)
        if len(self._pending) >= FLUSH_BLOBS or self._pending_bytes >= FLUSH_BYTES:
            self._flush_batch()
        self.received.append(digest)
        self._state = "pad" if self._pad else "header"


def _parse_header(block: bytes) -> tuple[str, bytes, int]:
    """Name, type flag and size of a ustar header, checksum verified.

    tarfile.TarInfo.frombuf parses every field of every header; for thousands of
    small blobs that was a fifth of the receiving time. The three fields needed
    here are at fixed offsets."""
    try:
        stored = int(block[148:156].strip(b"\0 ") or b"0", 8)
        size = int(block[124:136].strip(b"\0 ") or b"0", 8)
    except ValueError:
        raise PackError("bad tar header in the pack; send a plain ustar stream") from None
    # The checksum field itself counts as eight spaces.
    if stored != sum(block) - sum(block[148:156]) + 256:
        raise PackError("bad tar header checksum in the pack; send a plain ustar stream")
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    return name, block[156:157], size
