"""Helpers for the TUI's Pilot tests (a module of its own: several test folders have
a conftest.py, so `from conftest import` would be ambiguous)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from textual.pilot import Pilot

from nai_server.testing import wait_for
from nai_tui.config import ClientConfig, ServerEntry
from nai_tui.testing import FakeServerClient, ManualClock
from nai_tui.testing_demo import FakeTransfers
from nai_tui.tui.app import NaiApp
from nai_tui.tui.ports import reconnects

NOW = 1_700_000_000.0
SIZE = (120, 36)


def two_servers(tmp_path: Path) -> ClientConfig:
    """The client config, saved where the app rereads it (the servers screen does)."""
    config = ClientConfig(tmp_path / "config.yaml",
                          {"lab": ServerEntry("lab", "ssh://alice@lab.example.org"),
                           "box": ServerEntry("box", "gpubox")}, "lab")
    config.save()
    return config


def app_factory(tmp_path: Path, fake: FakeServerClient) -> Callable[..., NaiApp]:
    """Build apps on server "lab" (the `fake`); `servers={"box": other}` adds more,
    `connect=` replaces how clients are made."""

    def make(servers: dict[str, FakeServerClient] | None = None,
             connect: Callable[[ServerEntry], Any] | None = None, **kwargs: Any) -> NaiApp:
        fakes = {"lab": fake, **(servers or {})}

        def by_name(entry: ServerEntry) -> FakeServerClient:
            return fakes[entry.name]

        config = two_servers(tmp_path)
        options: dict[str, Any] = {
            "config": config, "server": config.servers["lab"], "clock": ManualClock(NOW),
            "transfers": FakeTransfers(), "downloads": tmp_path / "out",
            # Tests poll on purpose (refresh keys); the timers must not race them.
            "poll_interval": 3600.0, "backoff": reconnects(first=600.0, cap=3600.0, rand=lambda: 0.0)}
        options.update(kwargs)
        return NaiApp(connect or by_name, **options)

    return make


async def settle(pilot: Pilot[Any]) -> None:
    """Let workers finish and their messages land (a few rounds: a message may start
    another worker)."""
    app = pilot.app

    def working() -> list[Any]:
        # DirectoryTree's loader lives as long as the tree: not work to wait for.
        return [w for w in app.workers if w.group != "_loader" and not w.is_finished]

    for _ in range(20):
        # Failed workers are the app's to report: only wait for them here.
        await asyncio.gather(*(w.wait() for w in working()), return_exceptions=True)
        await pilot.pause()
        if not working():
            await pilot.pause()
            if not working():
                return
    raise AssertionError(f"workers kept running: {working()}")


def notifications(app: NaiApp) -> list[str]:
    """Every notification shown so far, title and message."""
    return [f"{n.title}: {n.message}" for n in app._notifications]


def text_of(widget: Any) -> str:
    """What a widget shows on screen, as plain text."""
    return "\n".join(strip.text for strip in widget.render_lines(widget.region.reset_offset))


BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def personal_daemon(root: Path, gpus: int = 8) -> Iterator[Path]:
    """A real `nai-server run --personal` on a socket under `root`; yields the socket.

    The venv's bin/ goes first on the daemon's PATH so example jobs find numpy."""
    sock = root / "s.sock"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(root / "daemon.log", "ab") as log:
        proc = subprocess.Popen(
            [str(BIN / "nai-server"), "run", "--personal", "--state-dir", str(root / "state"),
             "--socket", str(sock), "--fake-gpus", str(gpus)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or _answers(sock), 30, "the daemon")
        if proc.poll() is not None:
            raise AssertionError("the daemon did not start:\n" +
                                 (root / "daemon.log").read_text(errors="replace"))
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)),
                          base_url="http://nai", timeout=2) as client:
            return client.get("/v1/version").status_code == 200
    except httpx.HTTPError:
        return False
