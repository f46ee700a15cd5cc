"""Services through the real daemon, as real unix users: a model served by replicas
running as its owner, invoked through the daemon, byte for byte; replicas that die are
restarted and a daemon killed with -9 re-adopts them; GPUs are shared with jobs and
counted against quotas; a replica that sends headers without end is cut off."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]
from svc_support import (  # type: ignore[import-not-found]
    info,
    reaper,
    register_model,
    register_user,
    wait_state,
)

pytestmark = [needs_root]
__all__ = ["reaper"]


def predict_bytes(total: float, weights: str) -> bytes:
    return json.dumps({"sum": total, "weights": weights}, sort_keys=True).encode()


def test_serve_invoke_logs_and_gpus(daemon: Daemon, make_user, reaper) -> None:
    user = make_user()
    reaper.append((daemon, user))
    register_user(daemon, user)
    register_model(daemon, user, "adder", weights="w1")
    made = daemon.as_user(user, "POST", "/v1/services",
                          {"name": "adder", "model": "adder@1", "gpus": 1})
    assert made.status == 201, made.body
    assert made.json()["model"] == "adder@1" and made.json()["user"] == user.name
    ready = wait_state(daemon, "adder", "ready")
    assert ready["replica_info"][0]["gpus"] == [0]

    answer = daemon.as_user(user, "POST", "/v1/services/adder/invoke/predict",
                            {"inputs": [1, 2, 3.5]})
    assert answer.status == 200, answer.body
    assert answer.body == predict_bytes(6.5, "w1")  # byte-exact, from the replica
    assert answer.headers["x-replica"] == "fixture"
    many = list(range(300_000))  # a body over the 1 MiB of the daemon's other routes
    big = daemon.as_user(user, "POST", "/v1/services/adder/invoke/predict", {"inputs": many})
    assert big.status == 200 and big.body == predict_bytes(sum(many), "w1"), big.body[:300]

    who = daemon.as_user(user, "GET", "/v1/services/adder/invoke/whoami?a=1&b=x").json()
    assert who["uid"] == user.uid  # runs as its owner, not as root
    assert who["gpus"] == "0" and who["query"] == "a=1&b=x"
    model_dir = who["model_dir"]
    assert os.stat(model_dir).st_uid == 0
    assert oct(os.stat(model_dir).st_mode & 0o777) == oct(0o555)

    gpus = daemon.as_user(user, "GET", "/v1/gpus").json()["gpus"]
    assert gpus[0]["service"] == "adder" and gpus[0]["user"] == user.name
    assert gpus[1]["service"] is None

    log = daemon.as_user(user, "GET", "/v1/services/adder/logs?replica=0")
    assert log.status == 200 and b"serving on" in log.body, log.body
    stats = info(daemon, "adder")["stats"]
    assert stats["requests"] >= 2 and stats["errors"] == 0 and stats["p50_ms"] is not None

    with ThreadPoolExecutor(1) as pool:  # a followed log ends when its replica does
        followed = pool.submit(daemon.as_user, user, "GET",
                               "/v1/services/adder/logs?replica=0&follow=true")
        stopped = daemon.as_user(user, "DELETE", "/v1/services/adder")
        assert b"serving on" in followed.result(timeout=30).body
    assert stopped.status == 200 and stopped.json()["state"] == "stopped"
    wait_for(lambda: not info(daemon, "adder")["replica_info"]
             and not _alive(who["pid"]), what="the replica to stop")
    late = daemon.as_user(user, "POST", "/v1/services/adder/invoke/predict", {"inputs": [1]})
    assert late.status == 503 and "stopped" in late.json()["error"]["message"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _ready_adder(daemon: Daemon, make_user, reaper, gpus: int = 0, **model: str):
    """A new user of the daemon with the `adder` service ready (its replica on `gpus`)."""
    user = make_user()
    reaper.append((daemon, user))
    register_user(daemon, user)
    register_model(daemon, user, "adder", **model)
    assert daemon.as_user(user, "POST", "/v1/services",
                          {"name": "adder", "model": "adder", "gpus": gpus}).status == 201
    wait_state(daemon, "adder", "ready")
    return user


def test_killed_replica_restarts_and_requests_never_hang(daemon: Daemon, make_user,
                                                         reaper) -> None:
    user = _ready_adder(daemon, make_user, reaper)
    first = daemon.as_user(user, "GET", "/v1/services/adder/invoke/whoami").json()["pid"]
    os.kill(first, signal.SIGKILL)

    def ask(_: int) -> int:
        started = time.monotonic()
        got = daemon.as_user(user, "POST", "/v1/services/adder/invoke/predict",
                             {"inputs": [2, 2]})
        assert time.monotonic() - started < 25  # the daemon's wait is bounded
        if got.status == 200:
            assert got.body == predict_bytes(4, "w1")
        return got.status

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(ask, range(8)))
    assert set(statuses) <= {200, 503, 502}, statuses

    def restarted() -> dict | None:
        found = info(daemon, "adder")
        reps = found["replica_info"]
        return found if found["state"] == "ready" and reps[0]["restarts"] == 1 else None

    wait_for(restarted, what="the replica to be restarted")
    again = daemon.as_user(user, "GET", "/v1/services/adder/invoke/whoami").json()["pid"]
    assert again != first


def test_daemon_killed_readopts_ready_replicas(daemon: Daemon, make_user, reaper) -> None:
    user = _ready_adder(daemon, make_user, reaper, gpus=1, weights="w9")
    pid = daemon.as_user(user, "GET", "/v1/services/adder/invoke/whoami").json()["pid"]
    daemon.stop(signal.SIGKILL)
    assert _alive(pid)  # replicas outlive the daemon, like jobs
    daemon.start()
    found = wait_state(daemon, "adder", "ready")
    assert found["replica_info"][0]["restarts"] == 0 and found["replica_info"][0]["gpus"] == [0]
    answer = daemon.as_user(user, "POST", "/v1/services/adder/invoke/predict", {"inputs": [1]})
    assert answer.body == predict_bytes(1, "w9")
    assert daemon.as_user(user, "GET", "/v1/services/adder/invoke/whoami").json()["pid"] == pid


def test_a_replica_sending_endless_headers_is_cut_off_with_a_502(daemon: Daemon, make_user,
                                                                  reaper) -> None:
    user = _ready_adder(daemon, make_user, reaper)
    flooded = daemon.as_user(user, "GET", "/v1/services/adder/invoke/flood")
    assert flooded.status == 502, flooded.body
    error = flooded.json()["error"]
    assert error["code"] == "bad_gateway" and "oversized response head" in error["message"]

    def told() -> bytes | None:  # the replica saw the daemon stop reading
        log = daemon.as_user(user, "GET", "/v1/services/adder/logs?replica=0").body
        return log if b"flood " in log else None

    assert b"flood cut off" in wait_for(told, what="the flood to end")
    answer = daemon.as_user(user, "POST", "/v1/services/adder/invoke/predict", {"inputs": [1]})
    assert answer.status == 200 and answer.body == predict_bytes(1, "w1")
