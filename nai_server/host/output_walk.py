"""The helper that reads a finished job's output/ as the job's owner.

`python -m nai_server.host.output_walk DIR` runs with the job's uid, gid and groups (the
daemon starts it so, the way Slurm's slurmstepd drops privileges), so nothing its owner
could not read can become an output. It writes to stdout, for the daemon to store:

    one JSON line: {"entries": [{"path", "kind", "size", "mode", "target"?}, ...]}
                   or {"error": "..."} when the listing itself is refused
    then, for each file entry in that order, its bytes as frames: a 4-byte big-endian
    length and that many bytes, closed by an empty frame; or the frame ERROR, a 4-byte
    length and a UTF-8 message, when the file cannot be sent.

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

TYPE_CHECKING = False  # typing itself is not imported: it costs the helper's start
if TYPE_CHECKING:
    from typing import Any, BinaryIO

ERROR = 0xFFFFFFFF
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
                              "mode": stat.S_IMODE(st.st_mode)})
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


def send_file(out: BinaryIO, dirs: _Dirs, rel: str) -> None:
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
        os.set_blocking(fd, True)
        while chunk := src.read(FRAME):
            out.write(struct.pack(">I", len(chunk)))
            out.write(chunk)
    out.write(struct.pack(">I", 0))
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


def main(argv: list[str], out: BinaryIO | None = None) -> int:
    """List `argv[0]` (at most `argv[1]` entries) and send it to `out` (stdout)."""
    path, max_entries = argv[0], int(argv[1])
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
    out.write(_json({"entries": found}).encode() + b"\n")
    out.flush()
    dirs = _Dirs(root_fd)
    for entry in found:
        if entry["kind"] == "file":
            send_file(out, dirs, entry["path"])
    dirs.close()
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
