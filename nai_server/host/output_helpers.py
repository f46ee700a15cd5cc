"""The daemon's side of the output readers' fork server (nai_server.host.output_forks):
one server started on first use, asked for one reader per collection, each reader a
`Forked` that outputs.collect reads and, at its deadline, kills like a helper process.

Anything wrong with the server (it cannot start, it died, it does not answer) raises
OSError; the caller then starts a helper process of its own, as before, and so do the
requests of the next RETRY_AFTER seconds; the first after them starts a new server."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

from nai_server.host import output_forks

log = logging.getLogger("nai.outputs")

ANSWER_TIMEOUT = 10.0  # seconds the server may take to fork a reader
RETRY_AFTER = 60.0  # seconds without a server after one failed (helpers meanwhile)
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
AS_DAEMON = "--as-daemon"  # the server's flag: readers may run as it (output_forks)


# Becomes a user, then runs a command: what a child of the daemon execs while still root.
SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin")
_DROP = ("import os, sys\nuid, gid, groups, *argv = sys.argv[1:]\n"
         "os.setgroups([int(g) for g in groups.split(',') if g])\n"
         "os.setgid(int(gid))\nos.setuid(int(uid))\nos.execv(argv[0], argv)")


def as_owner(argv: list[str], uid: int, gid: int, groups: tuple[int, ...]) -> list[str]:
    """`argv` (its first word a path) run as uid/gid/groups by setpriv (or, where it is
    missing, a Python that does as it does), for a child of the daemon to exec as root.

    Popen(user=...) returns once its child has exec'd, and that child takes the user's
    uid first: from then on the user may stop it (SIGSTOP, from any process of theirs)
    short of its exec, and the daemon would wait for as long as they like. Started so,
    the daemon waits for root's exec alone; the user may stop what follows, which
    nobody waits for."""
    if SETPRIV is not None:
        listed = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
        return [SETPRIV, f"--reuid={uid}", f"--regid={gid}", listed, "--", *argv]
    return [sys.executable, "-I", "-S", "-c", _DROP, str(uid), str(gid),
            ",".join(map(str, groups)), *argv]


class Forked:
    """A reader forked by the server: its pid, a pidfd (exact even once the server has
    reaped it), the read end of its answer pipe, as `stdout`, and the write end of its
    question pipe, as `stdin`, when it was asked to take questions."""

    stderr = None

    def __init__(self, pid: int, pidfd: int, stdout: BinaryIO | None,
                 stdin: BinaryIO | None = None) -> None:
        self.pid, self.pidfd, self.stdout, self.stdin = pid, pidfd, stdout, stdin
        self._lock = threading.Lock()  # a deadline's kill races the reader's wait

    def poll(self) -> int | None:
        """None while it runs (its pidfd turns readable when it exits)."""
        if self.pidfd < 0:
            return 0
        ready = select.poll()
        ready.register(self.pidfd, select.POLLIN)
        return 0 if ready.poll(0) else None

    def kill(self) -> None:
        with self._lock:
            if self.pidfd >= 0:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def wait(self, timeout: float = 5.0) -> int:
        """Until it has exited (killed first by the caller), then forget its pidfd."""
        with self._lock:
            if self.pidfd >= 0:
                ready = select.poll()
                ready.register(self.pidfd, select.POLLIN)
                ready.poll(timeout * 1000)
                os.close(self.pidfd)
                self.pidfd = -1
        return 0


def _who(uid: int | None, gid: int | None, groups: tuple[int, ...]) -> bytes:
    """A request's account: "uid NUL gid NUL groups" (-1: as the server is)."""
    return b"\0".join([str(-1 if uid is None else uid).encode(),
                       str(-1 if gid is None else gid).encode(),
                       ",".join(str(g) for g in groups).encode()])


class AsRoot(Exception):
    """A reader asked to run as a root daemon that is not personal (no OSError: no
    helper of its own is started instead, which would run as root as well)."""


class ForkServer:
    """One fork server for the daemon's collections (thread-safe). Its readers run as
    the daemon (uid None) only if `as_daemon` (personal mode) or the daemon is not
    root: a root daemon's server refuses them otherwise."""

    def __init__(self, as_daemon: bool = False) -> None:
        self.as_daemon = as_daemon
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._failed_at: float | None = None  # when the server last failed

    def spawn(self, uid: int | None, gid: int | None, groups: tuple[int, ...],
              path: Path, max_entries: int, ask: bool = False) -> Forked:
        """A reader of `path` as uid/gid/groups (None: as the daemon, which a root
        daemon refuses unless `as_daemon`: AsRoot); with `ask`, one that reads which
        files to send from its `stdin` (output_walk)."""
        if uid is None and not self.as_daemon and os.geteuid() == 0:
            raise AsRoot(f"{path}: not read as root (no account to read it as)")
        request = _who(uid, gid, groups) + b"\0" + b"\0".join([
            str(max_entries).encode(), os.fsencode(path)])
        read_end, write_end = os.pipe()
        asked, ask_end = os.pipe() if ask else (-1, -1)
        try:
            pid, pidfd = self._ask(request, [write_end, *([asked] if ask else [])])
        except BaseException:
            os.close(read_end)
            if ask:
                os.close(ask_end)
            raise
        finally:
            os.close(write_end)
            if ask:
                os.close(asked)
        return Forked(pid, pidfd, os.fdopen(read_end, "rb", buffering=0),
                      os.fdopen(ask_end, "wb", buffering=0) if ask else None)

    def spawn_tagger(self, uid: int | None, gid: int | None, groups: tuple[int, ...],
                     fds: tuple[int, int, int, int]) -> Forked:
        """A job's stderr tagger (stderr_tagger) as uid/gid/groups, on the descriptors
        `fds`: the job's stderr pipe, the log, the marks file, the started pipe."""
        if uid is None and not self.as_daemon and os.geteuid() == 0:
            raise AsRoot("a stderr tagger is not run as root (no account to run it as)")
        pid, pidfd = self._ask(b"tag\0" + _who(uid, gid, groups), list(fds))
        return Forked(pid, pidfd, None)

    def _ask(self, request: bytes, fds: list[int]) -> tuple[int, int]:
        """One request with `fds` attached: the child's pid and a pidfd for it."""
        with self._lock:
            failed = self._failed_at
            if failed is not None and time.monotonic() - failed < RETRY_AFTER:
                raise OSError("the output fork server failed a moment ago")
            try:
                sock = self._server()
                socket.send_fds(sock, [request], fds)
                answer, got, _flags, _addr = socket.recv_fds(sock, 64, 1)
            except OSError:
                self._stop(failed=True)
                raise
            if not answer.isdigit() or len(got) != 1:
                for fd in got:
                    os.close(fd)
                if not answer:  # it died (a system without pidfds, say)
                    self._stop(failed=True)
                raise OSError(f"the output fork server refused: {answer[:64]!r}")
        return int(answer), got[0]

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _server(self) -> socket.socket:
        if self._sock is not None and self._proc is not None and self._proc.poll() is None:
            return self._sock
        self._stop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", output_forks.__file__,
                 *([AS_DAEMON] if self.as_daemon else [])], stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/", env=ENV,
                close_fds=True, start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(ANSWER_TIMEOUT)
        self._sock = ours
        log.info("output fork server started (pid %s)", self._proc.pid)
        return ours

    def _stop(self, failed: bool = False) -> None:
        if failed:
            self._failed_at = time.monotonic()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None
