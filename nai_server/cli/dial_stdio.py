"""`nai-server dial-stdio`: relay stdin/stdout to the daemon's unix socket.

SSH clients exec this on the server (as docker does with `docker system dial-stdio`)
because paramiko cannot forward to a remote unix socket. The relay runs as the
SSH user, so the daemon sees that user's uid through SO_PEERCRED.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys
import threading
from pathlib import Path

CHUNK = 1 << 20
# Room between the stages: with the defaults (a 64 KiB pipe from sshd, a 208 KiB
# socket buffer) every stage of an upload waits on the next many times per MiB.
PIPE_SIZE = 1 << 20
SOCKET_BUFFER = 4 << 20


def _pump(src: int, dst: int, *, splice: bool) -> None:
    """Move bytes from `src` to `dst` until end of input.

    With `splice`, splice(2) moves them inside the kernel when `src` is a pipe, as
    sshd's are; other descriptors (a socketpair, a file) fall back to read and write.
    (Reading a unix socket with splice can report end of input while the peer is only
    idle, so the way back always copies.)"""
    while splice:
        try:
            if not os.splice(src, dst, CHUNK, flags=os.SPLICE_F_MOVE):
                return
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            break
    while data := os.read(src, CHUNK):
        view = memoryview(data)
        while view:
            view = view[os.write(dst, view):]


def _pump_in(sock: socket.socket, fd: int) -> None:
    """stdin → socket; on EOF half-close so the server sees the end of the request."""
    try:
        _pump(fd, sock.fileno(), splice=True)
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def widen(sock: socket.socket, *fds: int) -> None:
    """Ask for larger buffers; the kernel caps them at its limits, and a descriptor
    that is not a pipe keeps what it has."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    for fd in fds:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def relay(sock: socket.socket, in_fd: int = 0, out_fd: int = 1) -> None:
    """Copy both ways until the server closes its side (or stdout goes away)."""
    widen(sock, in_fd, out_fd)
    threading.Thread(target=_pump_in, args=(sock, in_fd), daemon=True).start()
    try:
        _pump(sock.fileno(), out_fd, splice=False)
    except (BrokenPipeError, ConnectionResetError):
        pass


def run(socket_path: Path) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(socket_path))
    except FileNotFoundError:
        print(f"nai-server dial-stdio: no daemon socket at {socket_path} "
              f"(is `nai-server run` running?)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"nai-server dial-stdio: cannot connect to {socket_path}: {exc.strerror}",
              file=sys.stderr)
        return 1
    try:
        relay(sock)
    finally:
        sock.close()
    return 0
