"""Collecting a finished job's output/ into the blob store, read as the job's owner.

The daemon never walks a directory its users control with root's rights (DESIGN §11).
It starts `nai_server.host.output_walk` with the owner's uid, gid and groups; the helper
lists output/ and streams the files' bytes back over a pipe (see its docstring for the
framing), and the daemon checks the listing against the limits before a byte is
stored, hashes and stores what arrives, and records the tree. A helper that runs past
the deadline is killed, and nothing is recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nai_server.core.bounds import json_loads
from nai_server.core.trees import Limits, TreeError, parse_manifest, with_contents
from nai_server.host import output_seen, output_walk
from nai_server.host.output_helpers import Forked, ForkServer, as_owner
from nai_server.host.output_seen import Seen
from nai_server.host.output_walk import ERROR, FRAME, UNSETTLED
from nai_server.store.blobs import CHUNK, BlobStore, MissingBlobs
from nai_server.store.pack import BlobSink

log = logging.getLogger("nai.outputs")
Helper = subprocess.Popen[bytes] | Forked  # a reader: a process of its own, or forked
_PLACEHOLDER = "0" * 64
_MAX_LISTING = 64 << 20  # bytes of the listing line
# Files stored are made durable together (one syncfs) when a batch reaches either size;
# the bytes bound keeps what waits in the store's temp folder small.
BATCH_FILES = 512
BATCH_BYTES = 256 << 20
SMALL_FILE = 1 << 20  # read whole before a temp file is made: stored already?


@dataclass(frozen=True)
class RunAs:
    """The account a helper runs as (None fields: the daemon's own)."""

    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()


class _Frames:
    """A file-like view of one file's frames, read into the store by _Batch.add;
    `settled` once they end with the file's listed identity standing for them."""

    def __init__(self, stream: DeadlineStream, rel: str) -> None:
        self.stream, self.rel, self.done, self.settled = stream, rel, False, False

    def read(self, _size: int = -1) -> bytes:
        if self.done:
            return b""
        length = _unpack(self.stream.read(4), self.rel)
        if length == ERROR:
            size = _unpack(self.stream.read(4), self.rel)
            message = self.stream.read(min(size, 4096)).decode("utf-8", "replace")
            raise TreeError([(self.rel, _one_line(message.removeprefix(f"{self.rel}: ")))])
        if length == 0 or length == UNSETTLED:
            self.done, self.settled = True, length == 0
            return b""
        if length > FRAME:
            raise TreeError([(self.rel, "the output reader sent a malformed frame")])
        data = self.stream.read(length)
        if len(data) != length:
            raise TreeError([(self.rel, "the output reader stopped mid-file")])
        return data


def _one_line(text: str, limit: int = 1000) -> str:
    """What the reader said, as the daemon keeps it: one printable line, bounded (the
    reader is its user's process, which they may make say anything)."""
    shown = text if text.isprintable() else repr(text)[1:-1]
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def _unpack(raw: bytes, rel: str) -> int:
    if len(raw) != 4:
        raise TreeError([(rel, "the output reader stopped mid-file")])
    return int(struct.unpack(">I", raw)[0])


def collect(blobs: BlobStore, output_dir: Path, limits: Limits, run_as: RunAs,
            timeout: float, running: set[Helper] | None = None,
            forks: ForkServer | None = None, seen: Seen | None = None) -> str:
    """Store the tree under `output_dir`, read as `run_as`; return its id. Raises
    TreeError naming the path (and the rule) when the outputs are refused. The helper
    is in `running` while it runs, for whoever must stop it early. With `forks`, the
    reader is forked by that server (no Python to start) when it answers. With `seen`,
    what the job's passes stored ahead is not read again, and `seen` is brought up to
    date."""
    try:
        tree = _read(blobs, output_dir, limits, run_as, timeout, running, forks, seen,
                     ahead=False)
    except MissingBlobs:  # one stored ahead is gone (moved aside by a repair): all again
        if seen is None:
            raise
        seen.files = {}
        tree = _read(blobs, output_dir, limits, run_as, timeout, running, forks, None,
                     ahead=False)
    assert tree is not None
    return tree


def store_ahead(blobs: BlobStore, output_dir: Path, limits: Limits, run_as: RunAs,
                timeout: float, running: set[Helper] | None = None,
                forks: ForkServer | None = None, seen: Seen | None = None) -> None:
    """`collect` while the job still runs: its small files are stored, no tree is
    recorded, and the collection at its end finds them in the store (and, with the same
    `seen`, reads only what changed since). Raises as `collect` does."""
    _read(blobs, output_dir, limits, run_as, timeout, running, forks, seen, ahead=True)


def _read(blobs: BlobStore, output_dir: Path, limits: Limits, run_as: RunAs,
          timeout: float, running: set[Helper] | None, forks: ForkServer | None,
          seen: Seen | None, *, ahead: bool) -> str | None:
    proc: Helper | None = None
    if forks is not None:
        try:
            proc = forks.spawn(run_as.uid, run_as.gid, run_as.groups, output_dir,
                               limits.max_entries, ask=seen is not None)
        except OSError as exc:
            log.warning("output fork server: %s; starting a helper instead", exc)
    if proc is None:
        proc = _start(output_dir, limits, run_as, ask=seen is not None)
    running = set() if running is None else running
    running.add(proc)
    late = threading.Event()

    def expire() -> None:
        late.set()
        kill(proc)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        assert proc.stdout is not None
        # Read to a deadline a little past the timer's: the timer kills the helper's
        # group, but a process the owner made it start in a session of its own could
        # hold the pipe open, and a plain read would then never return.
        stream = DeadlineStream(proc.stdout.fileno(), time.monotonic() + timeout + 1.0)
        return _receive(blobs, stream, limits, ahead, seen, proc.stdin)
    except TreeError:
        if late.is_set():
            raise TreeError([("", f"collecting the outputs took longer than {timeout:g} s; "
                                  f"they stay in the job's output/ directory")]) from None
        raise
    finally:
        timer.cancel()
        kill(proc)
        proc.wait()  # (a forked reader's pidfd is closed here)
        running.discard(proc)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe:
                pipe.close()


class DeadlineStream:
    """The `read`/`readline` of a helper's stdout, ending as at end of file once
    `deadline` (time.monotonic()) has passed, whether or not the pipe has closed."""

    def __init__(self, fd: int, deadline: float) -> None:
        self.fd, self.deadline = fd, deadline
        self.buffer = bytearray()
        self.ended = False
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN | select.POLLHUP)

    def _fill(self, want: int) -> None:
        while len(self.buffer) < want and not self.ended:
            left = self.deadline - time.monotonic()
            if left <= 0 or not self.poller.poll(left * 1000):
                self.ended = True
                break
            chunk = os.read(self.fd, min(max(want - len(self.buffer), 1 << 16), 1 << 20))
            if not chunk:
                self.ended = True
            self.buffer += chunk

    def _take(self, size: int) -> bytes:
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out

    def read(self, size: int) -> bytes:
        self._fill(size)
        return self._take(size)

    def readline(self, limit: int) -> bytes:
        while True:
            end = self.buffer.find(b"\n", 0, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self.buffer) >= limit or self.ended:
                return self._take(limit)
            self._fill(len(self.buffer) + 1)


def _start(output_dir: Path, limits: Limits, run_as: RunAs,
           ask: bool = False) -> subprocess.Popen[bytes]:
    # The helper needs the standard library only: isolated (-I) and without site (-S),
    # it starts in a fraction of the time, and nothing of the user's environment or
    # home directory is imported into it.
    argv = [sys.executable, "-I", "-S", output_walk.__file__, str(output_dir),
            str(limits.max_entries), *(["ask"] if ask else [])]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.Popen(owner_argv(argv, run_as),
                            stdin=subprocess.PIPE if ask else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", env=env,
                            close_fds=True, start_new_session=True)


def owner_argv(argv: list[str], run_as: RunAs) -> list[str]:
    """`argv` as a child of the daemon execs it to run as `run_as` (as_owner): never
    Popen(user=...), which waits for a child its user may stop before it execs."""
    if run_as.uid is None:
        return argv
    if run_as.gid is None:
        raise ValueError("an account to run as needs its group")
    return as_owner(argv, run_as.uid, run_as.gid, run_as.groups)


def kill(proc: Helper) -> None:
    """Stop a helper (and anything it started) at once."""
    if isinstance(proc, Forked):  # exact through its pidfd; it cannot have started any
        proc.kill()
    elif proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, 9)


def _receive(blobs: BlobStore, stream: DeadlineStream, limits: Limits,
             ahead: bool = False, seen: Seen | None = None,
             questions: IO[bytes] | None = None) -> str | None:
    begun = time.monotonic()
    line = stream.readline(_MAX_LISTING)
    if not line.endswith(b"\n"):
        raise TreeError([("", "the output listing is too large or was cut off")])
    try:
        head = json_loads(line)  # the helper runs as the owner: any nesting
    except ValueError:
        raise TreeError([("", "the output reader sent a malformed listing")]) from None
    if not isinstance(head, dict) or not isinstance(head.get("entries"), list):
        said = head.get("error") if isinstance(head, dict) else head
        raise TreeError([("", _one_line(str(said)))])
    listed: list[dict[str, Any]] = head["entries"]
    # Refuse a bad tree (paths, links leaving it, sizes, counts) before any data moves.
    manifest = None
    if ahead:
        output_seen.check_ahead(listed, limits)
    else:
        for entry in listed:
            if isinstance(entry, dict) and entry.get("kind") == "file":
                entry["sha256"] = _PLACEHOLDER
        manifest = parse_manifest(listed, limits)
    files = [entry for entry in listed if entry["kind"] == "file"]
    known = output_seen.known(files, seen)
    if questions is not None:
        output_seen.ask(questions, known, stream.deadline)
    if seen is not None:
        seen.listing_seconds = time.monotonic() - begun
    stored: dict[str, output_seen.Known] = {}
    contents: list[tuple[str, int]] = []
    batch = _Batch(blobs, ahead)
    try:
        total = 0
        for entry, already in zip(files, known, strict=True):
            rel = entry["path"]
            if already is not None:  # its bytes are stored, and it has not changed since
                digest, size = already[3], already[2]
                stored[rel] = already
            else:
                frames = _Frames(stream, rel)
                digest, size = batch.add(frames, limits.max_file_size, rel)
                ident = output_seen.ident(entry)
                if (frames.settled and ident and digest != _PLACEHOLDER
                        and size == entry["size"]):
                    stored[rel] = (*ident, size, digest)
            total += size
            if total > limits.max_total_size:
                raise TreeError([("", f"outputs grew past the limit of "
                                      f"{limits.max_total_size} bytes while being stored")])
            contents.append((digest, size))
        batch.finish()
    finally:
        batch.drop()
    if seen is not None:
        seen.files = stored  # all durable now
    if manifest is None:
        return None
    # Recorded only now: every blob it names is durable under its digest.
    return blobs.put_tree(with_contents(manifest, contents))


class _Batch:
    """Output files on their way into the store, made durable a batch at a time: the
    bytes of a batch's sealed temp files by one `sync`, only then moved to their
    digests (`publish`), whose names the next `sync` makes durable. No blob appears
    under its digest before its bytes are on disk; an fsync per file (two, with its
    folder) cost more than the rest of collecting a small file."""

    def __init__(self, blobs: BlobStore, ahead: bool = False) -> None:
        self.blobs = blobs
        self.ahead = ahead  # small files only: a large one may still be being written
        self.pending: list[tuple[BlobSink, str]] = []
        self.bytes = 0
        self.unsynced_names = False  # blobs named (or found) since the last sync

    def add(self, src: _Frames, limit: int, name: str) -> tuple[str, int]:
        """Store one file; (digest, size). TreeError naming `name` once it holds more
        than `limit` bytes. A small file is read whole first: when the store holds its
        bytes already (a job run again, a step that changed few files), no temp file is
        made for it, the costliest part of collecting a small file."""
        head = bytearray()
        while len(head) <= SMALL_FILE and (chunk := src.read(CHUNK)):
            head += chunk
            if len(head) > limit:
                raise TreeError([(name, f"file grew past the limit of {limit} bytes")])
        small = src.done
        if small:
            digest = hashlib.sha256(head).hexdigest()
            if self.blobs.refresh(digest):  # found: kept by gc from now (see store/touch.py)
                return self._found(digest, len(head))
        elif self.ahead:  # read past, unstored: the end's collection stores it
            size = len(head)
            while chunk := src.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TreeError([(name, f"file grew past the limit of {limit} bytes")])
            return _PLACEHOLDER, size
        sink = self.blobs.new_sink()
        try:
            sink.write(memoryview(head))
            while chunk := src.read(CHUNK):
                sink.write(chunk)
                if sink.size > limit:
                    raise TreeError([(name, f"file grew past the limit of {limit} bytes")])
            sink.seal(sync=False)
        except BaseException:
            sink.discard()
            raise
        digest = sink.hasher.hexdigest()
        final = self.blobs.blob_path_trusted(digest)
        if not small and self.blobs.refresh(digest):  # (a small one was looked for above)
            sink.discard()
            return self._found(digest, sink.size)
        self.pending.append((sink, final))
        self.bytes += sink.size
        if len(self.pending) >= BATCH_FILES or self.bytes >= BATCH_BYTES:
            self.flush()
        return digest, sink.size

    def _found(self, digest: str, size: int) -> tuple[str, int]:
        """A file whose bytes the store holds already, on disk before they were named:
        kept as they are, with a sync before the tree is recorded, in case the name is
        not durable yet (a collection or upload beside this one may have just given it)."""
        self.unsynced_names = True
        return digest, size

    def flush(self) -> None:
        """Make the pending files' bytes durable, then move them to their digests."""
        batch, self.pending, self.bytes = self.pending, [], 0
        if batch:
            self.blobs.sync()
            self.unsynced_names = True
            self.blobs.publish(batch)

    def finish(self) -> None:
        """Flush the last batch and make every name given so far durable."""
        self.flush()
        if self.unsynced_names:
            self.blobs.sync()
            self.unsynced_names = False

    def drop(self) -> None:
        """Remove the temp files of a batch never published (after an error)."""
        batch, self.pending, self.bytes = self.pending, [], 0
        for sink, _ in batch:
            sink.discard()
