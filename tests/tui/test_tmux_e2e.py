"""End to end: the real `nai` TUI in a real terminal (tmux) against a real personal
daemon. Submit jobs/numpy-regression from the submit screen, watch it finish, read a
log line and its final state off the screen, pull its outputs, quit."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tui_kit import BIN, REPO, personal_daemon

from nai_server.testing import wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]


class Tmux:
    """One tmux server of our own (its own socket), one window."""

    def __init__(self, socket: Path) -> None:
        self.base = ["tmux", "-S", str(socket)]

    def run(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], check=True, capture_output=True,
                              text=True, timeout=30).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "nai")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "nai", *keys)

    def wait_for(self, check: Callable[[str], bool], what: str, timeout: float = 60) -> str:
        """Poll the screen until `check(text)`; fail showing the screen."""
        seen = [""]

        def look() -> bool:
            seen[0] = self.screen()
            return check(seen[0])

        try:
            wait_for(look, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{seen[0]}") from None
        return seen[0]

    def alive(self) -> bool:
        return subprocess.run([*self.base, "has-session", "-t", "nai"],
                              capture_output=True).returncode == 0


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(tmp_path / "tmux.sock")
    yield t
    subprocess.run([*t.base, "kill-server"], capture_output=True)


def test_submit_and_follow_a_job_in_the_real_tui(tmp_path: Path, tmux: Tmux) -> None:
    folder = tmp_path / "numpy-regression"
    shutil.copytree(REPO / "jobs" / "numpy-regression", folder)
    with personal_daemon(tmp_path) as sock:
        config = tmp_path / "config" / "nai" / "config.yaml"
        config.parent.mkdir(parents=True)
        config.write_text(f'default: here\nservers:\n  here: {{url: "local:{sock}"}}\n')
        env = {"XDG_CONFIG_HOME": tmp_path / "config", "XDG_CACHE_HOME": tmp_path / "cache",
               "TERM": "xterm-256color"}
        command = "env " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items()) + \
            f" {shlex.quote(str(BIN / 'nai'))}; echo NAI-EXITED-$?; sleep 60"
        # 80×24, the smallest terminal the TUI is made for.
        tmux.run("new-session", "-d", "-s", "nai", "-x", "80", "-y", "24", "-c", str(folder),
                 command)

        tmux.wait_for(lambda s: "connected" in s and "8 GPUs (fake)" in s, "the jobs screen")
        tmux.keys("n")  # the submit screen opens on the current folder, read from nai.yaml
        tmux.wait_for(lambda s: "python train.py --epochs 40" in s, "the submit form")
        tmux.keys("C-s")
        screen = tmux.wait_for(lambda s: "succeeded" in s and "done: val_acc" in s,
                               "the job to finish with its log on screen")
        assert "Job 1: numpy-regression" in screen
        assert "epoch  40  loss" in screen and "exit 0" in screen

        tmux.keys("p")  # asks where, offering ./nai-outputs: pull the outputs into .../1
        tmux.wait_for(lambda s: "Pull job 1's outputs under" in s, "the pull question")
        tmux.keys("Enter")
        dest = folder / "nai-outputs" / "1"
        # Files land one by one (each renamed into place whole), in path order.
        outputs = [dest / "summary.json", dest / "weights.npz"]
        tmux.wait_for(lambda _: all(f.exists() for f in outputs), "the pulled outputs", 30)
        assert (dest / "weights.npz").stat().st_size > 0

        tmux.keys("Escape")
        row = re.compile(r"^\s*1\s+numpy-reg\S*\s+\S+\s+succeeded\s+cpu\s", re.M)
        tmux.wait_for(lambda s: bool(row.search(s)), "the job's row in the jobs table")

        tmux.keys("q")
        tmux.wait_for(lambda s: "NAI-EXITED-0" in s, "nai to quit cleanly", timeout=20)
