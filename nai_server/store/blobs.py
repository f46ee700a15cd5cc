"""Content-addressed blob store: files by sha256, trees by id, packed (tar) uploads.

Layout under the root (DESIGN §6):

    sha256/ab/cdef…        blobs, read-only (0o444)
    trees/ab/cdef….json    trees: canonical manifest JSON, whose sha256 is the tree id
    tmp/                   files being written; nothing appears under a digest name
                           until it is complete, verified and on disk
    claims/<user>/…        who uploaded which blob, who recorded which tree (claims.py)

Nothing here deletes a blob or a tree: `nai-admin store gc` (gc.py) does, of those
nothing refers to and nobody was told of lately. Every answer that promises a blob or
a tree is there — "you need not send it" (`missing`, `held`, a packed upload that
finds it), a tree recorded over it (`put_tree`), an output collection that finds it
(`refresh`), "the tree is here" (`has_tree`) — sets its atime to now under
`sweep_lock`, the lock gc holds while it checks and deletes; a promise made before gc
looked is seen by it, and a file gc deleted first is answered as missing. atime, not
mtime: a tree's mtime is the time its downloads show, and a blob's is its hard links'
in jobs' folders.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from nai_server.core.trees import (
    UNLIMITED,
    Entry,
    Manifest,
    TreeError,
    canonical_json,
    diff_missing,
    is_digest,
    manifest_to_json,
    parse_manifest,
    select,
)
from nai_server.store.atomic import fsync_dir, syncfs
from nai_server.store.claims import Claims
from nai_server.store.pack import BlobSink

# Re-exported (`as`): callers import these from here with the store.
from nai_server.store.pack import PackError as PackError
from nai_server.store.pack import PackReceiver as PackReceiver
from nai_server.store.touch import refresh as refresh_file

CHUNK = 1 << 20
REFRESH_BATCH = 1024  # blobs refreshed per hold of the sweep lock
PARSED_ENTRIES = 100_000  # entries of the trees kept parsed (about 30 MB)
BLOCK = tarfile.BLOCKSIZE


class BlobNotFound(KeyError):
    """No blob with this digest is stored."""


class TreeNotFound(KeyError):
    """No tree with this id is stored (or nothing at the asked path inside it)."""


class MissingBlobs(Exception):
    """A tree refers to blobs the store lacks; `digests` lists them, in manifest order,
    and `paths` the tree's files they are (when a stored tree is read: its caller may
    see them), so that an answer can name what is lost."""

    def __init__(self, digests: Sequence[str], paths: Sequence[str] = ()) -> None:
        self.digests = list(digests)
        self.paths = list(paths)
        super().__init__(f"{len(self.digests)} blob(s) missing, first {self.digests[0]}")

    @classmethod
    def of(cls, entries: Iterable[Entry], have: Callable[[str], bool]) -> MissingBlobs | None:
        """The blobs of `entries` that `have` denies, with their files' paths; None if
        every blob is there."""
        entries = tuple(entries)
        missing = diff_missing(entries, have)
        if not missing:
            return None
        lost = set(missing)
        return cls(missing, [e.path for e in entries if e.kind == "file" and e.sha256 in lost])


class StoreCorrupt(Exception):
    """A stored file no longer matches its digest: a disk or operator problem."""


def check_digest(value: object) -> str:
    """Return `value` if it is a sha256 hex digest, else raise ValueError naming it."""
    if not is_digest(value):
        raise ValueError(f"not a sha256 digest (64 lowercase hex characters): {value!r}")
    assert isinstance(value, str)
    return value


class BlobStore:
    """Blobs and trees on disk, written atomically, never modified once stored."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # Private: a blob's mode is 0o444, so only the root's mode keeps private data
        # from anyone who can guess a digest. Jobs reach their blobs by hard links.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._blobs, self._trees, self._tmp = (self.root / d for d in ("sha256", "trees", "tmp"))
        self._blob_dir = str(self._blobs)  # pathlib costs show at thousands of blobs
        for directory in (self._blobs, self._trees, self._tmp):
            directory.mkdir(exist_ok=True)
        self.claims = Claims(self.root)
        # The last trees read, parsed (trees never change once recorded): a dataset's
        # every job and pull parsed its tree again, 0.1 s at 10,000 files.
        self._parsed: OrderedDict[str, Manifest] = OrderedDict()
        self._parsed_lock = threading.Lock()
        # Held by gc while it checks and deletes, and by every promise that a blob or a
        # tree is stored while it checks and refreshes (see the module's docstring).
        self.sweep_lock = threading.Lock()

    # -- blobs ---------------------------------------------------------------------------

    def path_of(self, digest: str) -> Path:
        """Where the blob with this digest lives (whether or not it is stored)."""
        check_digest(digest)
        return self._blobs / digest[:2] / digest[2:]

    def blob_path(self, digest: str) -> str:
        """path_of as a plain string, for the per-blob hot paths of uploads."""
        return self.blob_path_trusted(check_digest(digest))

    def blob_path_trusted(self, digest: str) -> str:
        """blob_path for a digest known to be one (a hexdigest, or from a checked tree):
        no check on the per-blob hot path of a packed upload."""
        return f"{self._blob_dir}/{digest[:2]}/{digest[2:]}"

    def has(self, digest: str) -> bool:
        """True if the blob is stored."""
        return os.path.isfile(self.blob_path(digest))

    def missing(self, digests: Iterable[str]) -> list[str]:
        """The digests not stored, unique, in the given order; ValueError for a bad digest.
        Those stored are refreshed: the caller was told it need not send them."""
        wanted = list(dict.fromkeys(check_digest(d) for d in digests))
        sizes = self._refresh_all(wanted)
        return [d for d, size in zip(wanted, sizes, strict=True) if size is None]

    def _refresh_all(self, digests: Sequence[str]) -> list[int | None]:
        """`_refresh` of each blob (checked digests), the lock taken a batch at a time:
        a tree of 100,000 files never holds up gc and other uploads for long."""
        sizes: list[int | None] = []
        for start in range(0, len(digests), REFRESH_BATCH):
            with self.sweep_lock:
                sizes += [refresh_file(self.blob_path_trusted(d))
                          for d in digests[start:start + REFRESH_BATCH]]
        return sizes

    def refresh(self, digest: str) -> bool:
        """True if the blob is stored, and then mark it as just promised, so that gc
        keeps it for its grace period from now (see the module's docstring)."""
        path = self.blob_path(digest)
        with self.sweep_lock:
            return refresh_file(path) is not None

    def open(self, digest: str) -> BinaryIO:
        """Open a stored blob for reading; BlobNotFound if absent."""
        try:
            return self.path_of(digest).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def put_bytes(self, data: bytes) -> str:
        """Store `data`; return its digest."""
        digest = hashlib.sha256(data).hexdigest()
        if not self.refresh(digest):
            self._write_new(data, self.path_of(digest))
        return digest

    def receiver(self, max_blob_size: int, holder: str | None = None, *,
                 sees_all: bool | None = None) -> PackReceiver:
        """Start receiving a packed upload (see PackReceiver); `holder`: the user whose
        claims record the blobs received; `sees_all`: they may know of every blob."""
        return PackReceiver(self, max_blob_size, holder, sees_all=sees_all)

    def held(self, user: str, digest: str) -> bool:
        """True if `user` uploaded this blob and it is still stored (then refreshed)."""
        return self.claims.holds(user, digest) and self.refresh(digest)

    def missing_for(self, user: str, digests: Iterable[str]) -> list[str]:
        """`missing`, as one user sees the store: what they have not uploaded themselves
        counts as missing, so the answer tells nothing of other users' blobs."""
        wanted = list(dict.fromkeys(check_digest(d) for d in digests))
        claimed = [d for d in wanted if self.claims.holds(user, d)]
        present = {d for d, size in zip(claimed, self._refresh_all(claimed), strict=True)
                   if size is not None}
        return [d for d in wanted if d not in present]

    def clean_tmp(self) -> None:
        """Remove leftovers of writes a crash interrupted. Call only while nothing uploads."""
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def new_sink(self, *, hash_only: bool = False) -> BlobSink:
        """A writer for one incoming blob, in this store's temp folder; `hash_only`: one
        the store already holds, so its bytes are hashed to check them, never written."""
        return BlobSink(None if hash_only else self._tmp)

    def _commit(self, sink: BlobSink, final: Path) -> None:
        """Move a complete, verified temp file to its content address, durably."""
        if sink.path is None:
            return
        sink.seal()
        with self.sweep_lock:
            if refresh_file(str(final)) is not None:  # same content: keep the one there
                sink.discard()
                return
            if not final.parent.is_dir():
                final.parent.mkdir(exist_ok=True)
                fsync_dir(final.parent.parent)
            os.replace(sink.path, final)
            sink.path = None
        fsync_dir(final.parent)

    def sync(self) -> None:
        """Make everything written in the store so far durable: the bytes of sealed temp
        files, and the blobs already moved into place (one syncfs: one file system)."""
        syncfs(self._tmp)

    def publish(self, sinks: Sequence[tuple[BlobSink, str]]) -> None:
        """Move sealed temp files, whose bytes a `sync` begun after they were sealed has
        made durable, to their digests; the caller's next `sync` makes the names
        durable. No blob ever appears under its digest before its bytes are on disk."""
        try:
            made: set[str] = set()
            with self.sweep_lock:  # renames only: gc checks a blob before or after
                self._publish_locked(sinks, made)
        finally:
            for sink, _ in sinks:
                sink.discard()  # anything not moved into place

    @staticmethod
    def _publish_locked(sinks: Sequence[tuple[BlobSink, str]], made: set[str]) -> None:
        for sink, final in sinks:
            if sink.path is None:
                continue
            # A blob already there has the same bytes: replacing it is harmless
            # (links to the old file keep it) and costs no more than a check.
            parent = final.rpartition("/")[0]
            if parent not in made:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(parent)
                made.add(parent)
            os.replace(sink.path, final)
            sink.path = None

    def _write_new(self, data: bytes, final: Path) -> None:
        sink = BlobSink(self._tmp)
        try:
            sink.write(data)
            self._commit(sink, final)
        except BaseException:
            sink.discard()
            raise

    # -- trees ---------------------------------------------------------------------------

    def _tree_path(self, tree_id: str) -> Path:
        check_digest(tree_id)
        return self._trees / tree_id[:2] / f"{tree_id[2:]}.json"

    def has_tree(self, tree_id: str) -> bool:
        """True if the tree is recorded; then refreshed: whoever asked may name it in a
        job or a version next, and gc keeps it for its grace period from now."""
        path = str(self._tree_path(tree_id))
        with self.sweep_lock:
            return refresh_file(path) is not None

    def put_tree(self, entries: Sequence[Entry]) -> str:
        """Record a tree whose blobs are all stored; return its id.

        Raises MissingBlobs if any blob is absent, TreeError if an entry is unsafe
        (entries not from parse_manifest, e.g. built by hand, are checked here) or its
        size disagrees with its blob.
        """
        if not isinstance(entries, Manifest):
            entries = parse_manifest(manifest_to_json(entries), UNLIMITED)
        # One stat per blob: present, and its size; each refreshed, so that gc keeps
        # it from now on (or deleted it first, and the tree is refused).
        # The digests are checked: parse_manifest made the entries.
        digests = list(dict.fromkeys(e.sha256 for e in entries if e.kind == "file"))
        sizes = dict(zip(digests, self._refresh_all(digests), strict=True))
        missing = [digest for digest, size in sizes.items() if size is None]
        if missing:
            raise MissingBlobs(missing)
        wrong = [
            (e.path, f"size says {e.size} bytes but the blob holds {actual}")
            for e in entries
            if e.kind == "file" and (actual := sizes[e.sha256]) != e.size
        ]
        if wrong:
            raise TreeError(wrong)
        data = canonical_json(entries)
        tree_id = hashlib.sha256(data).hexdigest()
        self._write_tree(data, self._tree_path(tree_id))
        return tree_id

    def _write_tree(self, data: bytes, final: Path) -> None:
        """Record a tree file, durably, with the same writes and syncs whether or not it
        was recorded before (by anyone): the time a POST /v1/trees takes must not tell
        that another user holds the same files. The one already there is kept."""
        sink = BlobSink(self._tmp)
        try:
            sink.write(data)
            sink.seal()
            if not final.parent.is_dir():
                final.parent.mkdir(exist_ok=True)
                fsync_dir(final.parent.parent)
            with self.sweep_lock:  # gc deletes it before (written anew) or keeps it
                if refresh_file(str(final)) is not None:
                    sink.discard()
                else:
                    assert sink.path is not None
                    os.replace(sink.path, final)
                    sink.path = None
            fsync_dir(final.parent)
        except BaseException:
            sink.discard()
            raise

    def tree_missing(self, tree_id: str) -> list[str]:
        """The digests of the tree's files the store lacks (a blob lost to a disk fault
        or an admin's mistake), unique, in manifest order; TreeNotFound if the tree is
        not recorded, StoreCorrupt if its file does not match its id.

        A stat per blob and no second parse: a file that matches its id holds what
        put_tree checked (this runs for every re-sync of an unchanged folder)."""
        data = self._tree_bytes(tree_id)
        seen: set[str] = set()
        missing: list[str] = []
        isfile = os.path.isfile
        for row in json.loads(data):
            digest = row["sha256"]
            if row["kind"] == "file" and digest not in seen:
                seen.add(digest)
                if not isfile(self.blob_path_trusted(digest)):
                    missing.append(digest)
        return missing

    def _tree_bytes(self, tree_id: str) -> bytes:
        """A recorded tree's file, checked against its id."""
        try:
            data = self._tree_path(tree_id).read_bytes()
        except FileNotFoundError:
            raise TreeNotFound(tree_id) from None
        if hashlib.sha256(data).hexdigest() != tree_id:
            raise StoreCorrupt(f"tree {tree_id} on disk does not match its id")
        return data

    def get_tree(self, tree_id: str) -> tuple[Entry, ...]:
        """The entries of a recorded tree, sorted by path; TreeNotFound if absent."""
        with self._parsed_lock:
            parsed = self._parsed.get(tree_id)
            if parsed is not None:
                self._parsed.move_to_end(tree_id)
                return parsed
        parsed = parse_manifest(json.loads(self._tree_bytes(tree_id)), UNLIMITED)
        if len(parsed) <= PARSED_ENTRIES:
            with self._parsed_lock:
                self._parsed[tree_id] = parsed
                kept = sum(len(m) for m in self._parsed.values())
                while kept > PARSED_ENTRIES:
                    kept -= len(self._parsed.popitem(last=False)[1])
        return parsed

    def forget_tree(self, tree_id: str) -> None:
        """Drop a tree gc deleted from the parsed ones, so it is not answered again."""
        with self._parsed_lock:
            self._parsed.pop(tree_id, None)

    def iter_tar(self, tree_id: str, prefix: str = "",
                 paths: Sequence[str] | None = None) -> Iterator[bytes]:
        """A tar stream of the tree, or of the part at/under `prefix`, or of exactly the
        entries at `paths` (what a client lacks), in ~1 MiB chunks.

        Checks run now, before the first chunk, so that an HTTP route can still answer
        with an error status: TreeNotFound (no tree, nothing at prefix, or a path not in
        it), TreeError (bad prefix), MissingBlobs (store damaged).
        """
        entries = select(self.get_tree(tree_id), prefix)
        if prefix and not entries:
            raise TreeNotFound(f"tree {tree_id} has nothing at {prefix!r}")
        if paths is not None:
            by_path = {e.path: e for e in entries}
            unknown = [p for p in paths if p not in by_path]
            if unknown:
                raise TreeNotFound(f"tree {tree_id} has no entry {unknown[0]!r}")
            entries = tuple(by_path[p] for p in dict.fromkeys(paths))
        if (lost := MissingBlobs.of(entries, self.has)) is not None:
            raise lost
        # Files get the time the tree was recorded: stable for a tree, and not 1970.
        mtime = int(self._tree_path(tree_id).stat().st_mtime)
        return self._tar_chunks(entries, mtime)

    def _tar_chunks(self, entries: Sequence[Entry], mtime: int) -> Iterator[bytes]:
        buf = bytearray()
        sent = 0
        for e in entries:
            info = tarfile.TarInfo(e.path)
            info.mtime, info.mode = mtime, e.mode
            if e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.target
            else:
                info.size = e.size
            # PAX only adds extended headers when needed (long or non-ASCII names, > 8 GiB).
            buf += info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            if e.kind == "file":
                with self.open(e.sha256) as src:
                    left = e.size
                    while left:
                        chunk = src.read(min(CHUNK, left))
                        if not chunk:
                            raise StoreCorrupt(f"blob {e.sha256} is shorter than recorded")
                        left -= len(chunk)
                        buf += chunk
                        if len(buf) >= CHUNK:
                            sent += len(buf)
                            yield bytes(buf)
                            buf.clear()
                buf += bytes(-e.size % BLOCK)
        buf += bytes(2 * BLOCK)
        buf += bytes(-(sent + len(buf)) % tarfile.RECORDSIZE)
        yield bytes(buf)

    # -- directories ---------------------------------------------------------------------

    def materialise(self, tree_id: str, dest: Path, *, link: bool) -> None:
        """Write a tree out into `dest`, which must be missing or empty.

        link=True (datasets, models): files are hard links to the read-only blobs, so
        nothing is copied; executables, and blobs on another file system, are copied
        read-only instead, since a link cannot carry its own mode. link=False (code):
        writable copies with the manifest's mode plus u+w.
        """
        entries = self.get_tree(tree_id)  # re-validated by parse_manifest on the way in
        if (lost := MissingBlobs.of(entries, self.has)) is not None:
            raise lost
        dest.mkdir(parents=True, exist_ok=True)
        # Empty, so nothing already there (a planted symlink) can redirect a write.
        if any(dest.iterdir()):
            raise FileExistsError(f"{dest} is not empty")
        made: set[str] = set()
        root = str(dest)  # paths as strings: pathlib cost as much as the links, at 10,000
        for e in entries:
            parent = e.path.rpartition("/")[0]
            if parent and parent not in made:
                # Never through a symlink: parse_manifest refuses a link that is a parent.
                os.makedirs(f"{root}/{parent}", exist_ok=True)
                made.add(parent)
            target = f"{root}/{e.path}"
            if e.kind == "symlink":
                os.symlink(e.target, target)
            elif not link:
                self._copy_out(e.sha256, Path(target), e.mode | 0o200)
            elif e.mode & 0o111:
                self._copy_out(e.sha256, Path(target), e.mode & 0o555)
            else:
                try:
                    os.link(self.blob_path_trusted(e.sha256), target)
                except OSError as exc:
                    # EXDEV: other file system; EPERM: protected_hardlinks; EMLINK: too many.
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                        raise
                    self._copy_out(e.sha256, Path(target), 0o444)

    def _copy_out(self, digest: str, target: Path, mode: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with self.open(digest) as src, os.fdopen(os.open(target, flags, 0o600), "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
            os.fchmod(dst.fileno(), mode)  # explicit, so the umask does not decide
