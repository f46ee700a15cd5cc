"""SIGKILL the daemon at random moments while clients submit jobs (each submit a record
appended to the hot state's journal): every restart opens, and every submit that was
acknowledged is there, once, with its id."""

from __future__ import annotations

import random
import signal
import threading

import httpx
from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]

from nai_server.store.journal import read_state

pytestmark = [needs_root]


def _submitter(daemon: Daemon, acked: dict[int, str], tag: str,
               stop: threading.Event) -> None:
    client = daemon.client()
    i = 0
    while not stop.is_set():
        command = f"echo {tag}-{i}"
        try:
            response = client.post("/v1/jobs", json={"spec": {"command": command, "gpus": 1}})
        except httpx.HTTPError:
            return  # the daemon died mid-request: never acknowledged
        if response.status_code == 201:
            acked[response.json()["id"]] = command
        i += 1


def test_sigkill_while_submitting_loses_no_acknowledged_job(daemon_factory) -> None:
    daemon: Daemon = daemon_factory(mode="personal")
    rng = random.Random(20261207)
    acked: dict[int, str] = {}
    for round_no in range(6):
        daemon.start()
        daemon.client().put("/v1/drain", json={"drained": True})  # they stay queued
        stop = threading.Event()
        writers = [threading.Thread(target=_submitter,
                                    args=(daemon, acked, f"r{round_no}w{w}", stop))
                   for w in range(4)]
        for w in writers:
            w.start()
        goal = len(acked) + rng.randint(5, 80)
        wait_for(lambda goal=goal, writers=writers: len(acked) >= goal
                 or not any(w.is_alive() for w in writers), what=f"{goal} acknowledged submits")
        if round_no % 2:  # killed between two writes: the last one was acknowledged
            stop.set()
            for w in writers:
                w.join(timeout=30)
        daemon.stop(signal.SIGKILL)
        stop.set()
        for w in writers:
            w.join(timeout=30)
        read_state(daemon.state / "state.json")  # opens as it is, torn record and all

    daemon.start()
    client = daemon.client()
    lost = [job for job, command in sorted(acked.items())
            if client.get(f"/v1/jobs/{job}").json().get("spec", {}).get("command") != command]
    assert len(acked) > 30 and not lost, f"{len(lost)} acknowledged submits lost: {lost[:5]}"
    listed = client.get("/v1/jobs", params={"limit": 1000}).json()["jobs"]
    ids = [j["id"] for j in listed]
    assert len(ids) == len(set(ids))  # none twice
