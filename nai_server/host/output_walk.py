"""The helper that reads a finished job's output/ as the job's owner.

`python -m nai_server.host.output_walk DIR` runs with the job's uid, gid and groups (the
daemon starts it so, the way Slurm's slurmstepd drops privileges), so nothing its owner
could not read can become an output. It writes to stdout, for the daemon to store:

    one JSON line: {"entries": [{"path", "kind", "size", "mode", "target"?}, ...]}
                   or {"error": "..."} when the listing itself is refused
    then, for each file entry in that order, its bytes as frames: a 4-byte big-endian
    length and that many bytes, closed by an empty frame (or by the frame UNSETTLED: the
    bytes sent may not be what the file's listed identity stands for); or the frame
    ERROR, a 4-byte length and a UTF-8 message, when the file cannot be sent.

Each file entry also carries "id": [inode, ctime in ns]. With a third argument `ask`,
after the listing the helper reads from stdin one bit per file entry (a bitmap,
first entry in the first byte's lowest bit): only the files whose bit is set are sent.
The daemon leaves out a file whose listed identity is that of bytes an earlier pass of
its own stored: its ctime is set by the kernel on every change, and a file is sent as
settled only when that ctime was older than the clock's error (SETTLE_NS) when the
file was opened, so that any later write makes a new one.

Standard library only, and nothing from the daemon, so that it starts quickly: one
starts for every job that ends, and on a loaded host `json` and `typing` (with `re`,
`enum` and `collections` behind them) took as long to import as Python took to start.
The listing's JSON is written here instead (`_json`).
"""

from __future__ import annotations

import itertools
import os
import stat
import struct
import sys
import time

TYPE_CHECKING = False  # typing itself is not imported: it costs the helper's start
if TYPE_CHECKING:
    from typing import Any, BinaryIO

ERROR = 0xFFFFFFFF
UNSETTLED = 0xFFFFFFFE
# How long after its last change a file's ctime is trusted to change with its next
# one: the kernel stamps changes with a clock up to a tick behind the one read here.
# Filesystems whose stamps are whole seconds (ext3's small inodes, FAT) get SETTLE_S_NS.
SETTLE_NS = 50_000_000
SETTLE_S_NS = 2_000_000_000
FRAME = 1 << 20
MAX_DEPTH = 256
# A file this much larger than the blocks it occupies would cost the store its full
# size for the little it costs the job: refused, with a word on what to do.
SPARSE_MIN_SIZE = 64 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Refused(Exception):
    """The output tree cannot be collected; the message names the path and says why."""


def file_problem(st: os.stat_result, uid: int) -> str | None:
    """Why a regular file may not become an output, or None."""
    if st.st_nlink > 1 and st.st_uid != uid:
        # A hard link to someone else's file: refused whatever protected_hardlinks says.
        return "is a hard link to a file its owner does not own; copy the file instead"
    if st.st_size >= SPARSE_MIN_SIZE and st.st_blocks * 512 < st.st_size // 2:
        return (f"is a sparse file ({st.st_size} bytes, {st.st_blocks * 512} on disk); "
                f"write it out densely or compress it to keep it as an output")
    return None


def listing(root_fd: int, max_entries: int) -> list[dict[str, Any]]:
    """Every file and symlink under the directory, depth first in name order
    (directories are opened without following links, so a swapped-in symlink cannot
    redirect the walk)."""
    found: list[dict[str, Any]] = []
    uid = os.geteuid()
    stop = min(max_entries, sys.maxsize - 1) + 1  # islice stops at sys.maxsize at most

    def walk(dir_fd: int, prefix: str) -> None:
        if prefix.count("/") > MAX_DEPTH:
            raise Refused(f"{prefix[:-1]}: directories nested deeper than {MAX_DEPTH} levels")
        # Read no further than one entry past the limit: a directory of millions of
        # names is refused before they all sit in this helper's memory.
        with os.scandir(dir_fd) as items:
            names = [item.name for item in itertools.islice(items, stop)]
        if len(names) > max_entries:
            raise Refused(f"more than {max_entries} entries")
        names.sort()
        for name in names:
            rel = prefix + name
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    walk(sub, rel + "/")
                finally:
                    os.close(sub)
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(name, dir_fd=dir_fd)
                found.append({"path": rel, "kind": "symlink", "target": target})
            elif stat.S_ISREG(st.st_mode):
                problem = file_problem(st, uid)
                if problem:
                    raise Refused(f"{rel}: {problem}")
                found.append({"path": rel, "kind": "file", "size": st.st_size,
                              "mode": stat.S_IMODE(st.st_mode),
                              "id": [st.st_ino, st.st_ctime_ns]})
            # Sockets, FIFOs and devices hold no data worth keeping: skipped.
            if len(found) > max_entries:
                raise Refused(f"more than {max_entries} entries")

    walk(root_fd, "")
    return found


class _Dirs:
    """Opens the directories of one path after another from the root, never following a
    link; keeps the last one open, since files come grouped by directory."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.path: str | None = None
        self.fd = -1

    def open(self, parent: str) -> int:
        if parent == self.path:
            return self.fd
        self.close()
        fd = os.dup(self.root_fd)
        try:
            for part in filter(None, parent.split("/")):
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        self.path, self.fd = parent, fd
        return fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.path, self.fd = None, -1


def settled(st: os.stat_result, now_ns: int) -> bool:
    """Whether any change to the file from now on gives it a new ctime."""
    margin = SETTLE_S_NS if st.st_ctime_ns % 1_000_000_000 == 0 else SETTLE_NS
    return st.st_ctime_ns < now_ns - margin


def send_file(out: BinaryIO, dirs: _Dirs, entry: dict[str, Any]) -> None:
    rel = entry["path"]
    parent, _, name = rel.rpartition("/")
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dirs.open(parent))
    except OSError as exc:
        return _error(out, f"{rel}: cannot be read ({exc.strerror})")
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return _error(out, f"{rel}: changed into a special file while being stored")
        problem = file_problem(st, os.geteuid())
        if problem:
            return _error(out, f"{rel}: {problem}")
        same = (settled(st, time.time_ns())
                and [st.st_ino, st.st_ctime_ns] == entry["id"] and st.st_size == entry["size"])
        os.set_blocking(fd, True)
        sent = 0
        while chunk := src.read(FRAME):
            out.write(struct.pack(">I", len(chunk)))
            out.write(chunk)
            sent += len(chunk)
    out.write(struct.pack(">I", 0 if same and sent == st.st_size else UNSETTLED))
    return None


def _json(value: object) -> str:
    """JSON for the listing's values (dicts, lists, str, int), as json.dumps writes it
    with ensure_ascii: a path's undecodable bytes (lone surrogates) survive the trip."""
    if isinstance(value, str):
        if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
            return f'"{value}"'
        return '"' + "".join(_char(c) for c in value) + '"'
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_json(str(k))}: {_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _listing_json(found: list[dict[str, Any]]) -> str:
    """`_json({"entries": found})`, written entry by entry in half the time (a listing
    is written for every pass over a job's outputs)."""
    rows = []
    for e in found:
        if e["kind"] == "file":
            ino, ctime = e["id"]
            rows.append(f'{{"path": {_json(e["path"])}, "kind": "file", "size": {e["size"]}, '
                        f'"mode": {e["mode"]}, "id": [{ino}, {ctime}]}}')
        else:
            rows.append(f'{{"path": {_json(e["path"])}, "kind": "symlink", '
                        f'"target": {_json(e["target"])}}}')
    return '{"entries": [' + ", ".join(rows) + "]}"


def _char(c: str) -> str:
    code = ord(c)
    if 0x20 <= code < 0x7F and c not in '"\\':
        return c
    if code > 0xFFFF:  # a surrogate pair, as JSON spells it
        code -= 0x10000
        return f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}"
    return f"\\u{code:04x}"


def _error(out: BinaryIO, message: str) -> None:
    data = message.encode("utf-8", "replace")[:4096]
    out.write(struct.pack(">II", ERROR, len(data)) + data)


def _wanted(count: int) -> bytes | None:
    """The daemon's bitmap of the files to send, from stdin (None if it stopped short)."""
    want = (count + 7) // 8
    got = bytearray()
    while len(got) < want:
        chunk = os.read(0, want - len(got))
        if not chunk:
            return None
        got += chunk
    return bytes(got)


def main(argv: list[str], out: BinaryIO | None = None) -> int:
    """List `argv[0]` (at most `argv[1]` entries) and send it to `out` (stdout); with
    `argv[2] == "ask"`, only the files the daemon asks for on stdin."""
    path, max_entries = argv[0], int(argv[1])
    ask = argv[2:3] == ["ask"]
    out = sys.stdout.buffer if out is None else out
    try:
        root_fd = os.open(path, _DIR_FLAGS)
        found = listing(root_fd, max_entries)
    except Refused as exc:
        out.write(_json({"error": str(exc)}).encode() + b"\n")
        return 1
    except OSError as exc:
        out.write(_json({"error": f"output/ cannot be read: {exc.strerror}"}).encode()
                  + b"\n")
        return 1
    files = [entry for entry in found if entry["kind"] == "file"]
    out.write(_listing_json(found).encode() + b"\n")
    out.flush()
    wanted = _wanted(len(files)) if ask else None
    if ask and wanted is None:
        return 1
    dirs = _Dirs(root_fd)
    for index, entry in enumerate(files):
        if wanted is None or wanted[index >> 3] >> (index & 7) & 1:
            send_file(out, dirs, entry)
    dirs.close()
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
