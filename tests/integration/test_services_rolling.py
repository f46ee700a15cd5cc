"""Changing a service while it serves: a rolling update under a steady stream of
requests fails none of them, a version that never becomes ready is rolled back, and
a service idle for its idle_timeout gives its GPU back and starts again on the next
request."""

from __future__ import annotations

import json
import threading

from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]
from svc_support import (  # type: ignore[import-not-found]
    info,
    reaper,
    register_model,
    register_user,
    wait_state,
)
from test_registry_access import Actor  # type: ignore[import-not-found]

pytestmark = [needs_root]
__all__ = ["reaper"]
CRASH = b"serve:\n  command: echo this version cannot load >&2; exit 3\n"


class Load:
    """Requests one after another on a kept-alive relay, until stopped."""

    def __init__(self, daemon: Daemon, user) -> None:
        self.actor = Actor(daemon, user)
        self.results: list[tuple[int, str]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            got = self.actor("POST", "/v1/services/adder/invoke/predict", {"inputs": [1, 1]})
            body = got.body if isinstance(got.body, dict) else json.loads(got.body or b"{}")
            self.results.append((got.status, body.get("weights", str(body))))

    def weights(self) -> set[str]:
        return {w for _, w in self.results}

    def stop(self) -> list[tuple[int, str]]:
        self.done.set()
        self.thread.join(60)
        self.actor.http.close()
        return self.results


def settled(daemon: Daemon, model: str) -> dict | None:
    found = info(daemon, "adder")
    reps = found["replica_info"]
    return found if found["model"] == model and found["state"] == "ready" and len(
        reps) == found["replicas"] and all(r["model"] == model and r["state"] == "ready"
                                          for r in reps) else None


def test_rolling_update_fails_no_request_and_a_broken_version_rolls_back(
        daemon_factory, make_user, reaper) -> None:
    # No wait for a ready replica: a moment without one fails a request at once.
    daemon = daemon_factory(services={"invoke_wait": 0})
    daemon.start()
    user = make_user()
    reaper.append((daemon, user))
    register_user(daemon, user)
    register_model(daemon, user, "adder", weights="w1")
    register_model(daemon, user, "adder", weights="w2")
    register_model(daemon, user, "adder", weights="w3", serve=CRASH)
    made = daemon.as_user(user, "POST", "/v1/services",
                          {"name": "adder", "model": "adder@1", "gpus": 0, "replicas": 2})
    assert made.status == 201, made.body
    wait_for(lambda: settled(daemon, "adder@1"), what="two replicas of version 1")
    load = Load(daemon, user)
    try:
        wait_for(lambda: len(load.results) >= 5, what="requests flowing")
        rolled = daemon.as_user(user, "PATCH", "/v1/services/adder", {"model": "adder@2"})
        assert rolled.status == 200, rolled.body
        wait_for(lambda: settled(daemon, "adder@2"), timeout=60, what="version 2 everywhere")
        seen = len(load.results)
        wait_for(lambda: len(load.results) >= seen + 5, what="requests to version 2")
        assert "w2" in load.weights()
        failed = [r for r in load.results if r[0] != 200]
        assert not failed, failed[:5]  # never a moment without a ready replica

        broken = daemon.as_user(user, "PATCH", "/v1/services/adder", {"model": "adder@3"})
        assert broken.status == 200 and broken.json()["model"] == "adder@3"
        back = wait_for(lambda: "rolled back" in str((i := info(daemon, "adder"))["message"])
                        and i, timeout=60, what="the broken version to be rolled back")
        assert back["model"] == "adder@2" and "cannot load" in back["message"]
        wait_for(lambda: settled(daemon, "adder@2"), what="version 2 serving again")
        seen = len(load.results)
        wait_for(lambda: len(load.results) >= seen + 5, what="requests after the rollback")
    finally:
        results = load.stop()
    failed = [r for r in results if r[0] != 200]
    assert not failed, failed[:5]
    assert load.weights() == {"w1", "w2"}
    tail = [w for _, w in results[-5:]]
    assert tail == ["w2"] * 5


def test_idle_service_scales_to_zero_and_starts_on_a_request(daemon: Daemon, make_user,
                                                             reaper) -> None:
    user = make_user()
    reaper.append((daemon, user))
    register_user(daemon, user)
    register_model(daemon, user, "adder", weights="cold")
    made = daemon.as_user(user, "POST", "/v1/services", {
        "name": "adder", "model": "adder", "gpus": 1, "idle_timeout": 2})
    assert made.status == 201, made.body
    wait_state(daemon, "adder", "ready")

    def idle() -> bool:
        found = info(daemon, "adder")
        with daemon.client() as root:
            gpus = root.get("/v1/gpus").json()["gpus"]
        return (found["state"] == "pending" and not found["replica_info"]
                and all(g["service"] is None for g in gpus))

    wait_for(idle, what="the idle service to give its GPU back")
    answer = daemon.as_user(user, "POST", "/v1/services/adder/invoke/predict",
                            {"inputs": [5]})
    assert answer.status == 200, answer.body  # the request waited for the cold start
    assert answer.json() == {"sum": 5, "weights": "cold"}
    assert info(daemon, "adder")["state"] == "ready"


def test_an_update_with_no_gpu_for_the_new_replica_rolls_back(daemon_factory, make_user,
                                                              reaper) -> None:
    # One GPU, held by the running version: the new one can never start beside it.
    daemon = daemon_factory(gpus=1, services={"start_timeout": 3})
    daemon.start()
    user = make_user()
    reaper.append((daemon, user))
    register_user(daemon, user)
    register_model(daemon, user, "adder", weights="w1")
    register_model(daemon, user, "adder", weights="w2")
    assert daemon.as_user(user, "POST", "/v1/services",
                          {"name": "adder", "model": "adder@1", "gpus": 1}).status == 201
    wait_state(daemon, "adder", "ready")
    assert daemon.as_user(user, "PATCH", "/v1/services/adder",
                          {"model": "adder@2"}).status == 200
    back = wait_for(lambda: "rolled back" in str((i := info(daemon, "adder"))["message"])
                    and i, what="the update to be rolled back")
    assert back["model"] == "adder@1" and "free GPU" in back["message"], back["message"]
    wait_for(lambda: settled(daemon, "adder@1"), what="only version 1 left")
    answer = daemon.as_user(user, "POST", "/v1/services/adder/invoke/predict", {"inputs": [1]})
    assert answer.json() == {"sum": 1, "weights": "w1"}
