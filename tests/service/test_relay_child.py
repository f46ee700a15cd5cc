"""The relay (a Slurm replica's own server behind the TCP link) takes its command down
with it: killed by SIGKILL or the OOM killer, it must not leave a model server holding
its GPU that nobody can reach. Real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from nai_server.testing import wait_for


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(p) for p in text]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_killed_relay_takes_its_command_with_it(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 64)
    env = {**os.environ, "NAI_SERVE_SOCKET": str(tmp_path / "serve.sock"),
           "NAI_SERVE_TOKEN_FILE": str(token),
           "NAI_SERVE_ADDRESS_FILE": str(tmp_path / "address")}
    relay = subprocess.Popen(
        [sys.executable, "-m", "nai_server.serving.relay", "--", "sleep", "300"],
        env=env, start_new_session=True)
    try:
        wait_for(lambda: (tmp_path / "address").exists() and _children(relay.pid),
                 what="the relay to start its command")
        (child,) = _children(relay.pid)
        assert _alive(child)
        relay.kill()
        relay.wait()
        wait_for(lambda: not _alive(child), timeout=10, what="the command to die with it")
    finally:
        try:
            os.killpg(relay.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
