"""Talking to the web app a job serves on its unix socket (an annotator's:
`nai_server.plugins.annotate_job`), in the job's own folder `code/`.

That folder is the job owner's: whatever they put at `code/annotate.sock` (a symlink to
a root-owned socket, a FIFO, a socket that never answers) must neither reach anyone
else through the daemon (root) nor make it wait. So the daemon opens the job directory
(its own) and `code/` without following links, accepts only a socket owned by the
job's user, connects through the folder's descriptor without blocking, and requires
the process at the other end to be the user's (SO_PEERCRED): a link swapped in between
the check and the connect still reaches no one else. The exchange that follows has
deadlines (`replica_http`).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from pathlib import Path

from nai_server.core.processing import APP_DIR, APP_SOCKET
from nai_server.host import unix

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class AppUnreachable(Exception):
    """The job's app socket is missing, not its user's, or refuses."""


def owner_uid(user: str, personal: bool) -> int:
    """The uid a job's socket and the process behind it must have."""
    if personal:
        return os.getuid()
    account = unix.unix_account(user)
    if account is None:
        raise AppUnreachable(f"no unix account {user!r}")
    return account.pw_uid


def connect(job_dir: Path, uid: int) -> socket.socket:
    """A connected, non-blocking socket to the job's app; AppUnreachable if its socket
    is not `uid`'s own or nothing of `uid`'s listens on it."""
    try:
        top = os.open(job_dir, _DIR_FLAGS)
    except OSError as exc:
        raise AppUnreachable(f"no job directory: {exc.strerror}") from exc
    try:
        folder = os.open(APP_DIR, _DIR_FLAGS, dir_fd=top)
    except OSError as exc:
        raise AppUnreachable(f"no {APP_DIR}/ folder: {exc.strerror}") from exc
    finally:
        os.close(top)
    sock = None
    try:
        try:
            st = os.stat(APP_SOCKET, dir_fd=folder, follow_symlinks=False)
        except OSError as exc:
            raise AppUnreachable("the app is not listening yet") from exc
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != uid:
            raise AppUnreachable(f"{APP_SOCKET} is not a socket of the job's user")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)  # a unix connect never waits then: EAGAIN at most
        try:
            sock.connect(f"/proc/self/fd/{folder}/{APP_SOCKET}")
        except OSError as exc:
            why = "busy" if exc.errno == errno.EAGAIN else exc.strerror
            raise AppUnreachable(f"connect: {why}") from exc
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        _pid, peer, _gid = _PEERCRED.unpack(raw)
        if peer != uid:
            raise AppUnreachable(f"the process behind {APP_SOCKET} is not the job's user's")
        return sock
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    finally:
        os.close(folder)
