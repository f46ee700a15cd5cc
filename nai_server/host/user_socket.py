"""Connect, as root, to a unix socket that a user's process listens on, in a folder the
user controls (a service replica's `run/`, an annotator job's `code/`).

Whatever the user put there (a symlink to a root-owned socket, a FIFO, a socket that
never answers) must neither reach anyone else through the daemon nor make it wait. So
the caller opens the folder without following links and passes its descriptor; this
accepts only a socket owned by the user, connects through the descriptor without
blocking, and requires the process at the other end to be the user's (SO_PEERCRED):
a link swapped in between the check and the connect still reaches no one else.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class SocketRefused(Exception):
    """The socket is missing, not the user's, refuses, or another's process is behind it."""


def connect(folder: int, name: str, uid: int, whose: str) -> socket.socket:
    """A connected, non-blocking socket to `name` in the open folder `folder`, which
    must be a socket owned by `uid` with a process of `uid` behind it (`whose` names
    that user in the messages). The folder's descriptor stays the caller's."""
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except OSError as exc:
        raise SocketRefused("not listening yet") from exc
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != uid:
        raise SocketRefused(f"{name} is not a socket of {whose}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)  # a unix connect never waits then: EAGAIN at most
        try:
            sock.connect(f"/proc/self/fd/{folder}/{name}")
        except OSError as exc:
            why = "busy" if exc.errno == errno.EAGAIN else exc.strerror
            raise SocketRefused(f"connect: {why}") from exc
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        _pid, peer, _gid = _PEERCRED.unpack(raw)
        if peer != uid:
            raise SocketRefused(f"the process behind {name} is not {whose}'s (uid {peer})")
        return sock
    except BaseException:
        sock.close()
        raise
