"""Talking to the web app a job serves on its unix socket (an annotator's:
`nai_server.plugins.annotate_job`), in the job's own folder `code/`.

That folder is the job owner's: the daemon opens the job directory (its own) and
`code/` without following links and connects as `user_socket` does (only the user's
socket, with the user's process behind it). The exchange that follows has deadlines
(`replica_http`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from nai_server.core.processing import APP_DIR, APP_SOCKET
from nai_server.host import unix, user_socket
from nai_server.host.user_socket import DIR_FLAGS


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
        top = os.open(job_dir, DIR_FLAGS)
    except OSError as exc:
        raise AppUnreachable(f"no job directory: {exc.strerror}") from exc
    try:
        folder = os.open(APP_DIR, DIR_FLAGS, dir_fd=top)
    except OSError as exc:
        raise AppUnreachable(f"no {APP_DIR}/ folder: {exc.strerror}") from exc
    finally:
        os.close(top)
    try:
        return user_socket.connect(folder, APP_SOCKET, uid, "the job's user")
    except user_socket.SocketRefused as exc:
        raise AppUnreachable(str(exc)) from exc
    finally:
        os.close(folder)
