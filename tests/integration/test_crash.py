"""SIGKILL the daemon at random moments during a stream of writes: every restart
reads consistent state, and nothing acknowledged to a client is lost."""

from __future__ import annotations

import random
import signal
import threading

import httpx
from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]

from nai_server.store.journal import read_state

pytestmark = [needs_root]


def _writer(daemon: Daemon, prefix: str, acked: list[str], stop: threading.Event) -> None:
    client = daemon.client()
    i = 0
    while not stop.is_set():
        name = f"{prefix}-{i}"
        try:
            response = client.post("/v1/groups", json={"name": name})
        except httpx.HTTPError:
            return  # the daemon died mid-request: this write was never acknowledged
        if response.status_code == 201:
            acked.append(name)
        i += 1


def _wait_for_writes(acked: list[str], count: int, writer: threading.Thread) -> None:
    wait_for(lambda: len(acked) >= count or not writer.is_alive(),
             what=f"{count} acknowledged writes")


def test_sigkill_during_writes_loses_nothing_acknowledged(daemon_factory) -> None:
    daemon: Daemon = daemon_factory(mode="personal")
    rng = random.Random(20261128)
    acked: list[str] = []
    for round_no in range(8):
        daemon.start()
        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(daemon, f"r{round_no}", acked, stop))
        writer.start()
        # A random moment inside the stream of writes: once it has begun, let a random
        # number of further writes be acknowledged, then kill.
        _wait_for_writes(acked, len(acked) + 1, writer)
        _wait_for_writes(acked, len(acked) + rng.randint(0, 60), writer)
        daemon.stop(signal.SIGKILL)
        stop.set()
        writer.join(timeout=30)

        # Every state file parses, on its own, without the daemon (with its journal).
        read_state(daemon.state / "state.json")

    daemon.start()
    names = {g["name"] for g in daemon.client().get("/v1/groups").json()}
    lost = [name for name in acked if name not in names]
    assert len(acked) > 8 and not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
