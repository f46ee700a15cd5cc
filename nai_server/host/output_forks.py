"""The output readers' fork server: `python -I -S output_forks.py`, started by the daemon
(nai_server.host.output_helpers) and fed on fd 0, a SOCK_SEQPACKET socket only the
daemon holds the other end of.

Starting Python for every job that ends is most of what collecting a small job's
outputs costs (tens of milliseconds, more on a loaded host; a cluster ends many jobs a
second). This process starts once, with output_walk loaded, and forks a reader per
request instead: each request is one message, "uid NUL gid NUL groups NUL max_entries
NUL path" (uid -1: stay as this process is; refused when it is root unless it was
started with --as-daemon, for personal mode), with the write end of the answer pipe
attached. The child drops the socket and every other descriptor, starts a session of
its own, takes the owner's groups, gid and uid (after which, having changed uid, it may
not be traced by the owner), and writes output_walk's answer to the pipe, exactly as
the helper started on its own does. The reply is the child's pid with a pidfd for it
attached, through which the daemon kills it at its deadline.

A request "tag NUL uid NUL gid NUL groups", with four descriptors attached (a job's
stderr pipe, the log, the marks file, the pipe it says it started on), forks a job's
stderr tagger (stderr_tagger) the same way: no Python starts for it either. The child
says it started while still root: once the owner's, it is theirs to stop (SIGSTOP), and
the daemon's launch of the job waits for that word.

Standard library only; nothing of the daemon, and nothing of what it knows, is in this
process. It exits when the daemon's end closes."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import signal
import socket
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

MAX_REQUEST = 1 << 16
AS_DAEMON = "--as-daemon"  # readers may stay as this process (personal mode)
TAG = b"tag\0"  # a request for a stderr tagger
TAG_FDS = 4


def _walker(name: str = "output_walk") -> ModuleType:
    """output_walk (or another module of this directory), loaded from beside this file
    (not from sys.path: nothing else of this directory may stand in for a standard
    module)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve(sock: socket.socket, as_daemon: bool = False) -> int:
    walker = _walker()
    tagger: ModuleType | None = None
    stay = as_daemon or os.geteuid() != 0  # uid -1 allowed: not root, or personal
    # Children are reaped as they exit (a tagger lives as long as its job: none may
    # linger as a zombie till the next request), but only while a request is awaited:
    # never between a fork and the pidfd_open of its child.
    chld = {signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, chld)
    signal.signal(signal.SIGCHLD, lambda _sig, _frame: _reap())
    while True:
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, chld)
            message, fds, _flags, _addr = socket.recv_fds(sock, MAX_REQUEST, TAG_FDS)
        except OSError:
            return 1
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, chld)
        if not message:
            return 0  # the daemon is gone
        _reap()
        tagging = message.startswith(TAG)
        if tagging:
            message = message[len(TAG):]
        if (len(fds) not in ((TAG_FDS,) if tagging else (1, 2))
                or not (stay or _owner(message) >= 0)):
            # A root server reads nobody's files as root: a user's output/ read so
            # would take what they may not read (a hard link to a root-owned file).
            for fd in fds:
                os.close(fd)
            sock.send(b"-")
            continue
        try:
            if tagging and tagger is None:
                tagger = _walker("stderr_tagger")
            pid = os.fork()
        except (OSError, ImportError, SyntaxError):
            for fd in fds:
                os.close(fd)
            sock.send(b"-")
            continue
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, chld)
            if tagging:
                _tag_child(tagger, sock, message, fds)  # never returns
            _child(walker, sock, message, fds)  # never returns
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)  # the child is not reaped before this: it is ours
        try:
            socket.send_fds(sock, [str(pid).encode()], [pidfd])
        finally:
            os.close(pidfd)


def _owner(message: bytes) -> int:
    """The uid a request asks for (-1 if it is not a number)."""
    try:
        return int(message.split(b"\0", 1)[0])
    except ValueError:
        return -1


def _reap() -> None:
    """Collect the children that have exited (the daemon watches them by pidfd)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _child(walker: ModuleType, sock: socket.socket, message: bytes, fds: list[int]) -> None:
    """A reader: its answer to fds[0]; with a second fd, the files the daemon asks for
    are read from it (output_walk's `ask`)."""
    code = 1
    try:
        sock.close()  # nobody but this server may ask for readers
        os.dup2(fds[0], 1)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(fds[1] if len(fds) > 1 else null, 0)
        os.dup2(null, 2)
        os.closerange(3, 1 << 20)
        os.setsid()
        uid, gid, groups, max_entries, path = message.split(b"\0", 4)
        if int(uid) >= 0:
            os.setgroups([int(g) for g in groups.split(b",") if g])
            os.setgid(int(gid))
            os.setuid(int(uid))
        with os.fdopen(1, "wb", closefd=False) as out:
            ask = ["ask"] if len(fds) > 1 else []
            code = walker.main([os.fsdecode(path), max_entries.decode(), *ask], out)
            out.flush()
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _account(message: bytes) -> tuple[int, int, list[int]]:
    """A request's "uid NUL gid NUL groups", as numbers (ValueError if one is not)."""
    uid, gid, groups = message.split(b"\0", 2)
    return int(uid), int(gid), [int(g) for g in groups.split(b",") if g]


def _drop(uid: int, gid: int, groups: list[int]) -> None:
    """Become the owner (after a session of one's own): groups, gid, then uid."""
    os.setsid()
    if uid >= 0:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)


def _tag_child(tagger: ModuleType | None, sock: socket.socket, message: bytes,
               fds: list[int]) -> None:
    code = 1
    try:
        sock.close()
        # Out of the way first (a received descriptor may hold any number), then in place:
        # 0 the job's stderr pipe, 1 the log, 3 the marks, 4 the started pipe.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in
                (*fds, os.open(os.devnull, os.O_RDWR))]
        for target, fd in zip((0, 1, 3, 4, 2), high, strict=True):
            os.dup2(fd, target)
        os.closerange(5, 1 << 20)
        assert tagger is not None
        with open("/proc/self/comm", "w") as comm:  # before the uid changes: then it may
            comm.write(tagger.NAME)  # not (a process that changed uid is not dumpable)
        account = _account(message)
        # Said before it is the owner's: from then on the owner may stop it (SIGSTOP),
        # and the daemon's launch of the job waits for this word, under its lock.
        os.write(4, b"\n")
        os.close(4)
        _drop(*account)
        code = tagger.run(0, 1, 3)
    except BaseException:
        code = 1
    finally:
        os._exit(code)


if __name__ == "__main__":
    sys.exit(serve(socket.socket(fileno=0), AS_DAEMON in sys.argv[1:]))
