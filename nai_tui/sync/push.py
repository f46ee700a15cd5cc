"""Folder sync with a server's content-addressed store (DESIGN §6).

`scan` turns a folder into a tree manifest (honouring .gitignore and .naiignore),
`push` sends only the blobs the server lacks as one streamed tar and records the
tree, `pull` writes a tree into a folder, fetching only the files that differ.

Scanning lives in `nai_tui.sync.scan`, pulling in `nai_tui.sync.pull` and the meters in
`nai_tui.sync.progress`; their public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nai_server.protocol import UNNAMED_BLOB, Conflict, ConnectionFailed
from nai_server.protocol import path_problem as path_problem
from nai_tui.remote.backoff import TRANSFERS, Backoff
from nai_tui.remote.client import ServerClient
from nai_tui.sync.hashcache import HashCache as HashCache
from nai_tui.sync.packing import Blob, Dropped, Drops, pack_blobs, pack_size
from nai_tui.sync.packing import blob_header as blob_header
from nai_tui.sync.packing import member_size as member_size
from nai_tui.sync.progress import Meter as Meter
from nai_tui.sync.progress import ProgressFactory as ProgressFactory
from nai_tui.sync.progress import auto_progress as auto_progress
from nai_tui.sync.progress import rich_progress as rich_progress
from nai_tui.sync.progress import silent_progress as silent_progress
from nai_tui.sync.pull import RETRIES as RETRIES
from nai_tui.sync.pull import PullResult as PullResult
from nai_tui.sync.pull import pull as pull
from nai_tui.sync.scan import ALWAYS_SKIPPED as ALWAYS_SKIPPED
from nai_tui.sync.scan import IGNORE_FILES as IGNORE_FILES
from nai_tui.sync.scan import Survey, read_content, read_digest, survey
from nai_tui.sync.scan import scan as scan
from nai_tui.sync.scan import select as select

log = logging.getLogger("nai.sync")

MISSING_BATCH = 10_000  # digests per /v1/blobs/missing request
# While hashing, the server is asked which blobs it lacks every so many files or bytes.
# The first batches are smaller, so that the upload starts sooner.
FIRST_BATCH_FILES = 64
BATCH_FILES = 1000
BATCH_BYTES = 64 << 20
# A file this large that the cache does not know starts travelling before it is hashed
# (unnamed; the server names it by its content): hashing first would leave the link
# idle for a second per GiB. If it turns out the server has it, it is dropped mid-way.
UNHASHED_BYTES = 64 << 20
# A cold file up to this size is read once: the bytes hashed are the bytes sent. Reading
# it again to send it cost more than hashing it, for thousands of small files. At most
# KEPT_BYTES of such files wait in memory for the upload; beyond, they are read again.
KEEP_BYTES = 256 << 10
KEPT_BYTES = 64 << 20


def tree_id(entries: Sequence[dict[str, Any]]) -> str:
    """The id the server gives this manifest: sha256 of its canonical JSON (sorted by
    path, sorted keys, compact, UTF-8), as nai_server.core.trees.canonical_json
    makes it; a test checks the two agree."""
    rows = [{"kind": e["kind"], "mode": e["mode"], "path": e["path"], "sha256": e["sha256"],
             "size": e["size"], "target": e.get("target", "")}
            for e in sorted(entries, key=lambda e: e["path"])]
    text = json.dumps(rows, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def missing_blobs(client: ServerClient, digests: Sequence[str]) -> list[str]:
    """Of `digests`, those the server lacks (asked in batches)."""
    missing: list[str] = []
    for start in range(0, len(digests), MISSING_BATCH):
        missing += client.missing_blobs(list(digests[start:start + MISSING_BATCH]))
    return missing


def _upload(client: ServerClient, blobs: Sequence[Blob], cache: HashCache,
            make: ProgressFactory) -> None:
    meter = make("uploading", pack_size(size for _, _, size, _ in blobs))
    stream = pack_blobs(blobs, cache=cache, on_bytes=meter.advance)
    try:
        client.upload_pack(stream)
    finally:
        stream.close()
        meter.close()


def _record(client: ServerClient, entries: list[dict[str, Any]], cache: HashCache) -> str:
    """Record the tree (see push); the hash cache is saved meanwhile. Saving thousands
    of new digests took a tenth of a second, which the server's check now covers."""
    with ThreadPoolExecutor(1, thread_name_prefix="nai-record") as pool:
        recorded = pool.submit(client.create_tree, entries)
        cache.flush()
        return recorded.result().id


def push(client: ServerClient, root: Path, *, cache: HashCache,
         progress: ProgressFactory | None = None, extra_ignores: Sequence[str] = (),
         retries: int = RETRIES, sleep: Callable[[float], None] = time.sleep,
         check: Callable[[Survey], None] | None = None) -> str:
    """Send folder `root` to the server as a tree; return the tree id.

    Only blobs the server lacks travel, in one streamed tar. Files the hash cache does
    not know are hashed while the first blobs travel (a thread hashes them in batches
    and asks which of each batch the server lacks). If the connection is cut, the
    upload resumes (up to `retries` times, with backoff) sending only what is still
    missing, which recording the tree reports. The hash cache is saved either way.
    `check` sees the folder listed, before any file is read or sent, and may refuse it
    by raising (e.g. `bigfiles.confirm_big_upload`).
    """
    try:
        with _collecting_only_new_objects():
            return _push(client, Path(root), cache, progress or auto_progress(),
                         extra_ignores, retries, sleep, check)
    except BaseException:
        cache.flush()  # what was hashed need not be hashed again next time
        raise


@contextlib.contextmanager
def _collecting_only_new_objects() -> Iterator[None]:
    """Garbage collections skip the objects that exist before this block.

    A push of thousands of files makes a few hundred thousand objects, enough to start
    a full collection, which walks every object of the process: 60 ms of a 1 s push
    of 10,000 files, where most objects were made at start-up and will live on."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _push(client: ServerClient, root: Path, cache: HashCache, make: ProgressFactory,
          extra_ignores: Sequence[str], retries: int, sleep: Callable[[float], None],
          check: Callable[[Survey], None] | None = None) -> str:
    # Files to send are asked about on one connection while the upload streams on
    # another. For a folder never sent, the second one is dialed while the folder is
    # listed; otherwise only if some file changed (a no-op push needs one request).
    seen = cache.knows_folder(root.resolve())
    if not seen:
        client.prepare_connections(1)
    folder = survey(root, cache=cache, extra_ignores=extra_ignores)
    if check is not None:
        check(folder)
    unread = folder.unread()
    if unread and seen:
        client.prepare_connections(1)
    backoff = Backoff(TRANSFERS.replace(retries=retries), sleep=sleep, log=log)
    if unread:
        digests, cut = _hash_while_sending(client, folder, unread, cache, make)
        entries = folder.entries(digests)
        if cut is not None and not backoff.pause(cut, "upload interrupted"):
            raise cut
    else:
        entries = folder.entries({})
        expected = tree_id(entries)
        if client.has_tree(expected):  # unchanged since it was last sent: nothing to do
            folder.forget_the_rest(cache)
            return expected
    folder.forget_the_rest(cache, save=False)  # saved while the tree is recorded
    while True:
        uploading = False
        try:
            try:
                return _record(client, entries, cache)
            except Conflict as exc:  # blobs missing: the server names them
                named = list(exc.details.get("missing") or ())
                wanted = set(named)
                sources = {e["sha256"]: (folder.root / e["path"], e["size"])
                           for e in entries if e["kind"] == "file" and e["sha256"] in wanted}
                missing = [d for d in named if d in sources]
                if not missing:
                    raise
            uploading = True
            _upload(client, [(d, *sources[d], None) for d in missing], cache, make)
            return _record(client, entries, cache)  # every blob is there now
        except ConnectionFailed as exc:
            # A server that cannot be reached at all fails at once; after a cut, asking
            # again may fail while the link comes back, so that is retried too.
            if not (uploading or backoff.retries) or not backoff.pause(
                    exc, "upload interrupted"):
                raise


class _Unhashed:
    """A large file queued for the upload before it is hashed. Sent named if its digest
    is known by the time the upload reaches it, unnamed otherwise; skipped, or dropped
    mid-way, once the server says it has it."""

    __slots__ = ("digest", "path", "present", "size")

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        self.digest: str | None = None
        self.present = False


_Batch = Sequence[Blob | _Unhashed] | BaseException | None  # to send; a failure; the end
_Hashed = list[tuple[str, int, str, "bytes | None"]]  # path, size, digest, content if kept


def _batch_limits() -> Iterator[int]:
    """Files in each batch the hashing thread hands on: few at first, so that the
    upload starts soon, then more, so that few questions are asked."""
    most = min(FIRST_BATCH_FILES, BATCH_FILES)
    while True:
        yield most
        most = min(4 * most, BATCH_FILES)


class _Budget:
    """Bytes of read files waiting in memory for the upload, up to `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self._lock:
            if self.held + size > self.limit:
                return False
            self.held += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self.held -= size


class _Hasher(threading.Thread):
    """Hashes the files the cache does not know, in batches, while a second thread asks
    the server which blobs of each batch it lacks; those go to `ready` for the upload.
    The files the cache knows make the first batch. A large file goes to `ready` before
    it is hashed (`_Unhashed`), so that it travels while it is hashed."""

    def __init__(self, client: ServerClient, folder: Survey,
                 unread: Sequence[tuple[str, os.stat_result]], cache: HashCache,
                 hashing: Meter, skipped: Callable[[int], None]) -> None:
        super().__init__(name="nai-hash", daemon=True)
        self.client, self.folder, self.unread, self.cache = client, folder, unread, cache
        self.hashing, self.skipped = hashing, skipped
        self.digests: dict[str, str] = {}
        self.ready: queue.Queue[_Batch] = queue.Queue()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.drops = Drops()
        self._asked: set[str] = set()
        self._asking = True
        self._hashed: queue.Queue[_Hashed | None] = queue.Queue()
        self.kept = _Budget(KEPT_BYTES)  # given back as the upload takes the bytes

    def run(self) -> None:
        base = self.folder.base
        asker = threading.Thread(target=self._asker, name="nai-ask", daemon=True)
        asker.start()
        try:
            batch: _Hashed = [(rel, st.st_size, digest, None) for rel, st in self.folder.files
                              if (digest := self.folder.known[rel]) is not None]
            size = 0
            limits = _batch_limits()
            most = next(limits)  # files in the next batch
            for rel, st in self.unread:
                if self.stop.is_set():
                    return
                if st.st_size >= UNHASHED_BYTES and self._asking:
                    self._hashed.put(batch)
                    batch, size = [], 0
                    self._send_unhashed(rel, st)
                    continue
                if len(batch) >= most or size >= BATCH_BYTES:
                    self._hashed.put(batch)
                    batch, size = [], 0
                    most = next(limits)
                data = None
                if st.st_size <= KEEP_BYTES and self._asking and self.kept.take(st.st_size):
                    try:
                        digest, data = read_content(self.cache, base + rel, st, self.hashing)
                    finally:
                        if data is None:
                            self.kept.give(st.st_size)
                else:
                    digest = read_digest(self.cache, base + rel, st, self.hashing)
                self.digests[rel] = digest
                batch.append((rel, st.st_size, digest, data))
                size += st.st_size
            self._hashed.put(batch)
        except BaseException as exc:  # the upload stops on it; push raises it
            self.error = exc
            self.ready.put(exc)
        finally:
            self._hashed.put(None)
            asker.join()
            self.ready.put(None)

    def _asker(self) -> None:
        """Asks about the hashed batches while the next ones are hashed. The batches that
        piled up during one question go in the next, so a round trip slower than
        hashing a batch costs few questions, not one per batch."""
        ended = False
        while not ended:
            batch = self._hashed.get()
            if batch is None:
                return
            while True:
                try:
                    more = self._hashed.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    ended = True
                    break
                batch += more
            if self.stop.is_set():
                continue
            try:
                self._ask(batch)
            except BaseException as exc:  # as a hashing failure: the upload stops on it
                self.error = exc
                self.ready.put(exc)
                self.stop.set()

    def _send_unhashed(self, rel: str, st: os.stat_result) -> None:
        item = _Unhashed(self.folder.root / rel, st.st_size)
        self.drops.watched.add(item.path)
        self.ready.put([item])
        digest = read_digest(self.cache, self.folder.base + rel, st, self.hashing)
        self.digests[rel] = digest
        item.digest = digest
        if digest in self._asked:  # a copy of a file already sent or known present
            lacking: set[str] | None = set()
        else:
            self._asked.add(digest)
            lacking = self._lacking([digest])
        if lacking is not None and not lacking:
            item.present = True
            self.drops.drop(item.path)

    def _ask(self, batch: _Hashed) -> None:
        if not self._asking:
            return
        fresh = {d for _, _, d, _ in batch if d not in self._asked}
        self._asked.update(fresh)
        lacking = self._lacking(list(fresh))
        blobs: list[Blob] = []
        for rel, size, digest, data in batch:
            if lacking is not None and digest in lacking:
                lacking.discard(digest)
                blobs.append((digest, self.folder.root / rel, size, data))
                continue
            if data is not None:
                self.kept.give(size)  # not sent from memory
            if lacking is not None and digest in fresh:
                fresh.discard(digest)
                self.skipped(member_size(size))  # the server has it
        if blobs:
            self.ready.put(blobs)

    def _lacking(self, digests: list[str]) -> set[str] | None:
        """Of `digests`, those the server lacks; None once the link is down: the upload
        stops on the failure, the rest is hashed, and push resumes once it is back."""
        try:
            return set(missing_blobs(self.client, digests)) if digests else set()
        except ConnectionFailed as exc:
            self._asking = False
            self.ready.put(exc)
            return None


def _hash_while_sending(client: ServerClient, folder: Survey,
                        unread: Sequence[tuple[str, os.stat_result]], cache: HashCache,
                        make: ProgressFactory
                        ) -> tuple[dict[str, str], ConnectionFailed | None]:
    """Hash `unread` while uploading what the server lacks; (digests of `unread`, the
    error that cut the upload if one did). Blobs not sent here go in push's next step."""
    sizes = {rel: st.st_size for rel, st in folder.files}
    hashing = make("hashing", sum(st.st_size for _, st in unread))
    # At most: the known blobs once each, and every unread file (duplicates among them
    # are found only once hashed; their bytes then count as done).
    known = {digest: sizes[rel] for rel, digest in folder.known.items() if digest}
    uploading = make("uploading", pack_size([*known.values(), *(sizes[r] for r, _ in unread)]))
    hasher = _Hasher(client, folder, unread, cache, hashing, uploading.advance)
    hasher.start()

    def batches() -> Generator[Blob, None, None]:
        while (item := hasher.ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            for blob in item:
                if not isinstance(blob, _Unhashed):
                    if blob[3] is not None:
                        hasher.kept.give(blob[2])
                    yield blob
                elif blob.present:
                    uploading.advance(member_size(blob.size))
                else:
                    yield blob.digest or UNNAMED_BLOB, blob.path, blob.size, None

    blobs = batches()
    cut: ConnectionFailed | None = None
    try:
        # One upload, unless a blob is dropped: the rest then goes in the next one.
        while (first := next(blobs, None)) is not None:
            stream = pack_blobs(itertools.chain([first], blobs), cache=cache,
                                on_bytes=uploading.advance, drops=hasher.drops)
            try:
                client.upload_pack(stream)
                break
            except Dropped:
                continue
            finally:
                stream.close()
    except ConnectionFailed as exc:
        cut = exc  # hashing goes on: the digests are needed to resume
    except BaseException:
        hasher.stop.set()
        raise
    finally:
        hasher.join()
        hashing.close()
        uploading.close()
    if hasher.error is not None and not isinstance(hasher.error, ConnectionFailed):
        raise hasher.error
    return hasher.digests, cut


