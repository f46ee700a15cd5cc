"""Services' pure rules: access, the `serve:` section, state, restarts, replicas."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from nai_server.core import resources
from nai_server.core import service_rules as rules


@dataclass
class Who:
    user: str
    admin: bool = False
    groups: tuple[str, ...] = ()


def doc(owner: dict, visibility: str) -> dict:
    return {"owner": owner, "visibility": visibility, "replica_docs": []}


@pytest.mark.parametrize(("owner", "visibility", "who", "read", "write"), [
    ({"user": "ann"}, "private", Who("ann"), True, True),
    ({"user": "ann"}, "private", Who("bob", groups=("lab",)), False, False),
    ({"user": "ann"}, "private", Who("root", admin=True), True, True),
    ({"user": "ann"}, "group", Who("bob", groups=("lab",)), True, False),
    ({"user": "ann"}, "group", Who("eve", groups=("other",)), False, False),
    ({"group": "lab"}, "private", Who("bob", groups=("lab",)), True, True),
    ({"group": "lab"}, "group", Who("eve"), False, False),
    ({"user": "ann"}, "shared", Who("eve"), True, False),
])
def test_access(owner: dict, visibility: str, who: Who, read: bool, write: bool) -> None:
    d = doc(owner, visibility)
    assert rules.may_read(who, d, owner_groups=("lab",)) is read
    assert rules.may_write(who, d) is write


def test_serve_section() -> None:
    assert rules.parse_serve(None) == rules.Serve()
    got = rules.parse_serve({"command": "python s.py", "health": "/ok", "gpus": 1,
                             "replicas": 2, "idle_timeout": 60})
    assert (got.command, got.health, got.gpus, got.replicas, got.idle_timeout) == (
        "python s.py", "/ok", 1, 2, 60.0)
    for bad, why in [([], "mapping"), ({"command": ""}, "command"),
                     ({"health": "health"}, "path"), ({"health": "/a b"}, "path"),
                     ({"gpus": -1}, "gpus"), ({"gpus": True}, "gpus"),
                     ({"replicas": "2"}, "replicas"), ({"comand": "x"}, "unknown")]:
        with pytest.raises(rules.ServeError, match=why):
            rules.parse_serve(bad)


def test_state_backoff_and_failures() -> None:
    assert rules.service_state([]) == "pending"
    assert rules.service_state(["starting", "ready", "unhealthy"]) == "ready"
    assert rules.service_state(["starting", "unhealthy"]) == "unhealthy"
    assert [rules.backoff(n) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 30.0]
    assert rules.too_many_failures([100, 101, 102], 103, window=10, limit=3)
    assert not rules.too_many_failures([1, 101, 102], 103, window=10, limit=3)


def test_new_replicas_take_the_lowest_free_index() -> None:
    d = {"replica_docs": [], "gpus": 1, "model": "m@1", "tree_id": "t", "command": "c",
         "health": "/h", "number": 7}
    first, second = rules.new_replica(d), rules.new_replica(d)
    assert (first["index"], second["index"]) == (0, 1)
    first["stopping"] = True  # on its way out: its index is free again
    assert rules.new_replica(d)["index"] == 0
    assert rules.live(d) == [second, d["replica_docs"][2]]
    assert rules.replica_dir(d, {"run": 3}) == "7.3"


def test_a_replicas_own_processes_are_not_foreign_on_its_gpus(
        own_session: tuple[int, int]) -> None:
    from nai_server.app.service_gpus import without_replicas

    leader, member = own_session  # the leader stands for a replica's wrapper
    docs = [{"replica_docs": [{"handle": f"{leader}:0", "gpus": [1]}]}]
    foreign = {1: [(member, 10, None), (1, 5, None)], 2: [(member, 10, None)]}
    assert without_replicas(foreign, docs) == {1: [(1, 5, None)],  # someone else's
                                               2: [(member, 10, None)]}  # strayed
    assert without_replicas({1: [(member, 1, None)]}, docs) == {}


def test_serve_sizes_and_limits() -> None:
    serve = rules.parse_serve({"gpu_memory": "8G", "memory": "512M", "cpus": 2})
    assert (serve.gpu_memory, serve.memory, serve.cpus) == (8 << 30, 512 << 20, 2.0)
    for bad in ({"gpu_memory": "lots"}, {"memory": True}, {"cpus": "two"}):
        with pytest.raises(rules.ServeError, match=r"serve\."):
            rules.parse_serve(bad)


@pytest.mark.parametrize(("bad", "says"), [
    ({"memory": 0}, r"serve\.memory must be from 16MiB to 1PiB, got 0"),
    ({"memory": "0"}, r"serve\.memory must be from 16MiB to 1PiB"),
    ({"memory": 1}, r"serve\.memory must be from 16MiB to 1PiB"),  # killed at once
    ({"memory": "2P"}, r"serve\.memory must be from 16MiB to 1PiB"),
    ({"cpus": 0}, r"serve\.cpus must be a number of CPUs from 0\.01 to 65536"),
    ({"cpus": float("nan")}, r"serve\.cpus must be a number of CPUs from 0\.01"),
    ({"cpus": float("inf")}, r"serve\.cpus must be a number of CPUs from 0\.01"),
    ({"cpus": 100000}, r"serve\.cpus must be a number of CPUs from 0\.01"),
])
def test_serve_limits_have_a_jobs_bounds(bad: dict, says: str) -> None:
    # 0 used to pass and leave the replica without a memory limit; NaN failed every start
    with pytest.raises(rules.ServeError, match=says):
        rules.parse_serve(bad)


def test_replica_limits_refuse_zero_and_nan() -> None:
    room = {"host_memory": 64 << 30, "host_cpus": 8, "default_memory": 4 << 30,
            "max_memory": 8 << 30}
    assert resources.limits(None, None, **room) == (4 << 30, None)
    for memory, cpus in ((0, None), (None, 0.0), (None, float("nan"))):
        with pytest.raises(ValueError, match="must be more than 0"):
            resources.limits(memory, cpus, **room)


def test_stopped_services_expire_per_user_by_count_and_age() -> None:
    def svc(name: str, user: str, state: str, at: float, replicas: int = 0) -> dict:
        return {"name": name, "user": user, "state": state, "updated_at": at,
                "number": int(at), "replica_docs": [{}] * replicas}

    docs = [svc("a1", "ann", "stopped", 1), svc("a2", "ann", "failed", 2),
            svc("a3", "ann", "stopped", 3), svc("a4", "ann", "ready", 0),
            svc("a5", "ann", "stopped", 0.5, replicas=1),  # still stopping: kept
            svc("b1", "bob", "stopped", 1)]
    assert rules.expired(docs, now=10, keep=2, max_age=100) == ["a1"]
    assert rules.expired(docs, now=102.5, keep=2, max_age=100) == ["a1", "a2", "b1"]
    assert rules.expired(docs, now=10, keep=0, max_age=100) == ["a1", "a2", "a3", "b1"]
