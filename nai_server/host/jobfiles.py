"""Opening the files of a job's directory without trusting them.

The daemon may run as root, and a job may replace what it can write with a symlink, a
FIFO or a device at any moment (DESIGN §11). New job directories belong to the daemon
and hold nothing the job can rename, but directories made by older versions belong to
the job's owner, so every open here goes through a directory descriptor opened without
following links, opens the name with O_NOFOLLOW|O_NONBLOCK (a FIFO cannot block it),
and accepts only a regular file. Reads are bounded by the caller.

A hard link is a regular file too: in a directory its owner controls, a name may be a
second link to a file of root's or of another user (where `protected_hardlinks` is off),
which root would then read out or append to. So in a directory the daemon does not hold
alone, a file with more than one link must belong to the directory's owner. In the
daemon's own directories every name is one the daemon made, and others linking those
files elsewhere (which raises their link count) must not make them unreadable.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeJobFile(OSError):
    """A job file is not a regular file any more (a link, a FIFO, a device...)."""


def planted(dir_st: os.stat_result, st: os.stat_result) -> bool:
    """Whether a file (`st`) found in a directory (`dir_st`) may be a hard link planted
    there to someone else's file: the directory is not the daemon's alone, the file has
    more than one link, and the directory's owner does not own it (or anyone may write
    the directory)."""
    if dir_st.st_uid == os.geteuid() and not dir_st.st_mode & 0o022:
        return False  # the daemon made every name in it
    if st.st_nlink <= 1:
        return False
    return st.st_uid != dir_st.st_uid or bool(dir_st.st_mode & 0o022)


def _check(dir_st: os.stat_result, fd: int, path: Path) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeJobFile(f"{path} is not a regular file")
    if planted(dir_st, st):
        raise UnsafeJobFile(f"{path} is a hard link to a file its directory's owner "
                            f"does not own")
    return st


@contextlib.contextmanager
def open_regular(job_dir: Path, name: str) -> Iterator[int | None]:
    """A read-only descriptor of `job_dir/name` if it is a regular file; None if it (or
    the directory) does not exist. Raises UnsafeJobFile for anything else."""
    try:
        dir_fd = os.open(job_dir, _DIR_FLAGS)
    except FileNotFoundError:
        yield None
        return
    except OSError as exc:  # ELOOP/ENOTDIR: the directory itself was swapped
        raise UnsafeJobFile(f"{job_dir} is not a directory") from exc
    try:
        dir_st = os.fstat(dir_fd)
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            fd = None
        except OSError as exc:  # ELOOP: a symlink; ENXIO: a socket
            raise UnsafeJobFile(f"{job_dir / name} is not a regular file") from exc
    finally:
        os.close(dir_fd)
    if fd is None:
        yield None
        return
    try:
        _check(dir_st, fd, job_dir / name)
        os.set_blocking(fd, True)
        yield fd
    finally:
        os.close(fd)


def read_small(job_dir: Path, name: str, limit: int = 4096) -> bytes | None:
    """At most `limit` bytes from the start of a small job file; None if it is missing
    or is not a regular file (a status file someone replaced tells nothing)."""
    try:
        with open_regular(job_dir, name) as fd:
            return None if fd is None else os.pread(fd, limit, 0)
    except OSError:
        return None


def read_range(job_dir: Path, name: str, offset: int, limit: int) -> bytes:
    """Up to `limit` bytes of a job file from `offset` (b"" when missing or past its end)."""
    with open_regular(job_dir, name) as fd:
        return b"" if fd is None else os.pread(fd, limit, offset)


def iter_range(job_dir: Path, name: str, offset: int, chunk: int = 1 << 16) -> Iterator[bytes]:
    """What a job file holds from `offset` up to its size when opened, in chunks: a file
    that keeps growing (or a sparse one) cannot hold the reader forever."""
    with open_regular(job_dir, name) as fd:
        if fd is None:
            return
        end = os.fstat(fd).st_size
        while offset < end:
            data = os.pread(fd, min(chunk, end - offset), offset)
            if not data:
                return
            offset += len(data)
            yield data


def append(job_dir: Path, name: str, data: bytes, max_size: int | None = None) -> bool:
    """Append `data` to an existing regular job file in one write, starting it on a new
    line if the file's last line is unfinished; False if the file is missing, or if it
    would grow past `max_size` (root's writes ignore the user's quota: bound them).
    Raises UnsafeJobFile when the name is not a regular file (never follows a link)."""
    dir_fd = os.open(job_dir, _DIR_FLAGS)
    try:
        dir_st = os.fstat(dir_fd)
        try:
            fd = os.open(name, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        except OSError as exc:  # ELOOP: a symlink; ENXIO: a socket
            raise UnsafeJobFile(f"{job_dir / name} is not a regular file") from exc
    finally:
        os.close(dir_fd)
    try:
        st = _check(dir_st, fd, job_dir / name)
        if max_size is not None and st.st_size + len(data) + 1 > max_size:
            return False
        if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return True
