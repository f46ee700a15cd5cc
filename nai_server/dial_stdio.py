"""`nai-server dial-stdio`: relay stdin/stdout to the daemon's unix socket.

SSH clients exec this on the server (as docker does with `docker system dial-stdio`)
because paramiko cannot forward to a remote unix socket. The relay runs as the
SSH user, so the daemon sees that user's uid through SO_PEERCRED.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

CHUNK = 256 * 1024


def _pump_in(sock: socket.socket, fd: int) -> None:
    """stdin → socket; on EOF half-close so the server sees the end of the request."""
    try:
        while True:
            data = os.read(fd, CHUNK)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def relay(sock: socket.socket, in_fd: int = 0, out_fd: int = 1) -> None:
    """Copy both ways until the server closes its side (or stdout goes away)."""
    threading.Thread(target=_pump_in, args=(sock, in_fd), daemon=True).start()
    try:
        while True:
            data = sock.recv(CHUNK)
            if not data:
                break
            view = memoryview(data)
            while view:
                view = view[os.write(out_fd, view) :]
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
