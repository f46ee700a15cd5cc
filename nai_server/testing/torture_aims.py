"""Where the torture test's kills land: signs, seen from outside the daemon, that it
is at the moment aimed at (a job directory being copied, outputs being collected, a
job's end, an archive move), and the wait for them or for the client's requests."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from nai_server.store.atomic import StateUnreadable
from nai_server.store.journal import read_state

if TYPE_CHECKING:
    from nai_server.testing.torture import Client, DaemonProcess

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "lost"}


class Signs:
    """What the killer watches for on disk and in /proc, from the daemon's outside."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.jobs = daemon.state / "jobs"
        self.archive = daemon.state / "archive"
        self.ended: set[str] = set()
        self.archives: set[tuple[str, int, int]] = set()

    def baseline(self) -> None:
        self.ended = self._ended()
        self.archives = self._archives()

    @staticmethod
    def hot_jobs(state_file: Path) -> list[Any]:
        """The jobs of the hot table on disk."""
        try:
            return list(read_state(state_file).get("jobs", {}).values())
        except (OSError, ValueError, StateUnreadable):
            return []

    @staticmethod
    def archivable(state_file: Path) -> bool:
        """Whether the hot table holds an ended job (the next start moves it)."""
        return any(isinstance(j, dict) and j.get("state") in TERMINAL
                   for j in Signs.hot_jobs(state_file))

    def seen(self, aim: str) -> bool:
        if aim == "copy":
            return any(n.startswith(".") and n.endswith(".new") for n in _names(self.jobs))
        if aim == "collect":
            return _collecting()
        if aim == "end":
            return bool(self._ended() - self.ended)
        if aim == "archive":
            return bool(self._archives() - self.archives)
        raise ValueError(aim)

    def _ended(self) -> set[str]:
        done = set()
        for name in _names(self.jobs):
            if name.isdigit() and name not in self.ended:
                try:
                    raw = (self.jobs / name / "run.status").read_bytes()
                except OSError:
                    continue
                if b"exit " in raw:
                    done.add(name)
        return done | self.ended

    def _archives(self) -> set[tuple[str, int, int]]:
        found = set()
        for name in _names(self.archive):
            try:
                st = os.stat(self.archive / name)
            except OSError:
                continue
            found.add((name, st.st_ino, st.st_mtime_ns))
        return found


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _collecting() -> bool:
    """Whether an output reader runs: a helper (output_walk), or a reader forked by
    the fork server (output_forks, like its parent; the server alone waits)."""
    for pid in _names(Path("/proc")):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"output_walk" in cmdline:
                    return True
                if b"output_forks" in cmdline:
                    ppid = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1]
                    if b"output_forks" in Path(f"/proc/{int(ppid)}/cmdline").read_bytes():
                        return True
            except (OSError, IndexError, ValueError):
                continue
    return False


def all_ended(api: httpx.Client) -> bool:
    """Whether every job (of the newest thousand) has ended."""
    page = api.get("/v1/jobs", params={"limit": 1000}).json()
    return all(j["state"] in TERMINAL for j in page["jobs"])


def wait_for_aim(aim: str, rng: random.Random, client: Client, signs: Signs) -> bool:
    """Wait until the moment aimed at (True), or give up at a deadline (False)."""
    if aim == "delay":
        time.sleep(rng.uniform(0, 1.5))  # the point of the test: a kill at a random time
        return True
    if aim in client.about:
        if not client.about[aim].wait(2.5):
            return False
        time.sleep(rng.uniform(0, 0.03))  # somewhere inside the request
        return True
    deadline = time.monotonic() + (10.0 if aim == "archive" else 2.5)
    while time.monotonic() < deadline:
        if signs.seen(aim):
            return True
        time.sleep(0.002)
    return False
