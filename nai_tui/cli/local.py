"""The embedded quickstart: a personal-mode daemon on this machine (`nai up`,
`nai down`) and `nai demo`, which runs an example job end to end with it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from nai_server.protocol import ConnectionFailed
from nai_tui.config import personal_socket, personal_state


def daemon_pid(sock: Path) -> int | None:
    """The pid of whatever answers on the socket (its SO_PEERCRED), or None."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(str(sock))
        raw = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", raw)[0])
    except OSError:
        return None
    finally:
        probe.close()


def _server_command() -> list[str]:
    exe = Path(sys.executable).parent / "nai-server"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("nai-server")
    if found:
        return [found]
    return [sys.executable, "-m", "nai_server.cli"]


def up(*, fake_gpus: int | None = None, sock: Path | None = None,
       state: Path | None = None, timeout: float = 30.0) -> tuple[int, bool]:
    """Start the personal daemon unless it runs; returns (pid, started_now)."""
    sock = sock or personal_socket()
    state = state or personal_state()
    pid = daemon_pid(sock)
    if pid is not None:
        return pid, False
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = [*_server_command(), "run", "--personal", "--state-dir", str(state),
            "--socket", str(sock)]
    if fake_gpus is not None:
        argv += ["--fake-gpus", str(fake_gpus)]
    with open(state / "daemon.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (state / "daemon.log").read_text(errors="replace")[-2000:]
            raise ConnectionFailed(f"the personal nai-server exited ({proc.returncode}):\n"
                                   f"{tail}")
        pid = daemon_pid(sock)
        if pid is not None:
            return pid, True
        time.sleep(0.05)
    proc.terminate()
    raise ConnectionFailed(f"the personal nai-server did not answer on {sock} in {timeout:.0f}s "
                           f"(log: {state / 'daemon.log'})")


def down(sock: Path | None = None, timeout: float = 30.0) -> bool:
    """Stop the personal daemon; False if none was running."""
    sock = sock or personal_socket()
    pid = daemon_pid(sock)
    if pid is None:
        return False
    if pid != os.getpid():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    raise ConnectionFailed(f"nai-server (pid {pid}) did not stop within {timeout:.0f}s")


def _alive(pid: int) -> bool:
    """Whether the process still runs (reaping it if it is our own exited child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:  # not our child: ask the kernel instead
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

