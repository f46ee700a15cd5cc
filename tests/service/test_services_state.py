"""Services' state stays bounded and the supervisor keeps slow work out of the lock,
in process (personal mode, the supervisor stepped by the test): caps on services per
user and tokens per service, stopped services removed in time with their directories,
a model version a service serves kept from removal, placement by `gpu_memory`, the
jobs' memory and CPU limits on replicas' cgroups, and no user lookup, log read,
signal or directory removal while the store's lock is held."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from nai_server.api.app import create_app
from nai_server.app.use_cases import UseCases
from nai_server.config import load_config
from nai_server.daemon import bootstrap
from nai_server.host import cgroup_limits, contain
from nai_server.host.gpus import FakeGpuInventory
from nai_server.testing import AsPeer, upload_tree, wait_for

SERVER = (Path(__file__).parents[1] / "integration" / "service_model" / "server.py").read_bytes()


def serve_yaml(extra: str = "") -> bytes:
    return (f"serve:\n  command: {sys.executable} server.py\n  health: /health\n"
            f"{extra}").encode()


class Rig:
    def __init__(self, tmp: Path, gpus: list[int] | None = None,
                 jobs: dict[str, Any] | None = None, **services: Any) -> None:
        cfg = load_config(None, mode="personal", state_dir=tmp / "state",
                          socket=tmp / "state" / "nai.sock", fake_gpus=len(gpus or [2, 2]),
                          services={"probe_timeout": 5, **services}, jobs=jobs)
        sizes = [(f"GPU {i}", g << 30) for i, g in enumerate(gpus or [80, 80])]
        self.svc: UseCases = bootstrap(cfg, gpus=FakeGpuInventory(sizes))
        self.life = self.svc.services.life
        self.now = 1000.0
        self.api = TestClient(AsPeer(create_app(self.svc)), base_url="http://nai")

    def model(self, name: str, serve: bytes | None = None) -> None:
        tree = upload_tree(self.api, {"nai.yaml": serve or serve_yaml(), "server.py": SERVER,
                                      "weights.txt": b"w1"})
        made = self.api.post("/v1/models", json={"name": name, "tree_id": tree})
        if made.status_code == 409:
            made = self.api.post(f"/v1/models/{name}/versions", json={"tree_id": tree})
        assert made.status_code == 201, made.text

    def serve(self, name: str, model: str = "m", **body: Any) -> Any:
        return self.api.post("/v1/services", json={"name": name, "model": model, **body})

    def step(self, seconds: float = 1.0) -> None:
        self.now += seconds
        self.life.step(self.now)

    def info(self, name: str) -> dict[str, Any]:
        got = self.api.get(f"/v1/services/{name}")
        assert got.status_code == 200, got.text
        return dict(got.json())

    def close(self) -> None:
        for svc in self.api.get("/v1/services").json()["services"]:
            self.api.delete(f"/v1/services/{svc['name']}")
        wait_for(lambda: not any(d["replica_docs"] for d in self.svc.services.records.list()),
                 timeout=30, what="every replica gone", step=lambda: self.step(10))
        wait_for(lambda: not self.life.host.leftover_cgroups, timeout=30,
                 what="their cgroups gone", step=self.step)
        self.api.close()
        self.svc.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path, keep_stopped=2, keep_stopped_seconds=3600,
               max_services_per_user=3, max_tokens_per_service=2)
    made.model("m")
    yield made
    made.close()


def test_services_per_user_are_capped(rig: Rig) -> None:
    for name in ("a", "b", "c"):
        assert rig.serve(name, replicas=0).status_code == 201
    over = rig.serve("d", replicas=0)
    assert over.status_code == 409, over.text
    message = over.json()["error"]["message"]
    assert "runs 3 services" in message and "nai service stop" in message
    assert rig.api.delete("/v1/services/a").status_code == 200  # stopped ones do not count
    assert rig.serve("d", replicas=0).status_code == 201


def test_replicas_per_user_are_capped_with_or_without_gpus(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_replicas_per_user=4)
    try:
        rig.life._launch = lambda *args: None  # type: ignore[method-assign]
        rig.model("m")
        assert rig.serve("a", gpus=0, replicas=3).status_code == 201
        over = rig.serve("b", gpus=0, replicas=2)  # GPU quotas do not stop CPU-only ones
        assert over.status_code == 409, over.text
        message = over.json()["error"]["message"]
        assert "5 replicas in all" in message and "max_replicas_per_user" in message
        assert rig.serve("b", gpus=0, replicas=1).status_code == 201
        scaled = rig.api.patch("/v1/services/b", json={"replicas": 2})
        assert scaled.status_code == 409, scaled.text
        assert rig.api.patch("/v1/services/a", json={"replicas": 1}).status_code == 200
        assert rig.api.patch("/v1/services/b", json={"replicas": 3}).status_code == 200
        assert rig.api.delete("/v1/services/b").status_code == 200  # stopped: not counted
        assert rig.serve("c", gpus=0, replicas=3).status_code == 201
    finally:
        rig.close()


def test_tokens_per_service_are_capped(rig: Rig) -> None:
    assert rig.serve("a", replicas=0).status_code == 201
    made = [rig.api.post("/v1/services/a/tokens", json={"label": str(i)}) for i in range(2)]
    assert all(m.status_code == 201 for m in made), [m.text for m in made]
    over = rig.api.post("/v1/services/a/tokens", json={"label": "x"})
    assert over.status_code == 409, over.text
    assert "token revoke a" in over.json()["error"]["message"]
    gone = made[0].json()["id"]
    assert rig.api.delete(f"/v1/services/a/tokens/{gone}").status_code in (200, 204)
    assert rig.api.post("/v1/services/a/tokens", json={}).status_code == 201


def test_stopped_services_are_removed_in_time_with_their_directories(rig: Rig) -> None:
    root = rig.svc.services.host.root
    for name in ("a", "b", "c"):
        assert rig.serve(name, replicas=0).status_code == 201
        rig.now += 1
        rig.svc.services.clock = lambda: rig.now  # stopped at distinct times
        assert rig.api.delete(f"/v1/services/{name}").status_code == 200
    number = rig.svc.services.records.get("a")["number"]  # type: ignore[index]
    (root / f"{number}.1").mkdir()  # a directory a crash left behind
    (root / f".{number}.2.new").mkdir()
    rig.step()
    names = {s["name"] for s in rig.api.get("/v1/services").json()["services"]}
    assert names == {"b", "c"}  # the two newest stopped ones are kept
    assert not any(p.name.startswith((f"{number}.", f".{number}.")) for p in root.iterdir())
    rig.step(3600 + 5)  # past keep_stopped_seconds: all go
    assert rig.api.get("/v1/services").json()["services"] == []
    assert rig.serve("a", replicas=0).status_code == 201  # the name is free again


def test_a_served_model_version_is_not_removed(rig: Rig) -> None:
    assert rig.serve("a", replicas=0).status_code == 201
    refused = rig.api.delete("/v1/models/m/versions/1")
    assert refused.status_code == 409, refused.text
    message = refused.json()["error"]["message"]
    assert "a (m@1)" in message and "nai service stop" in message
    assert rig.api.delete("/v1/models/m").status_code == 409  # the whole model neither
    assert rig.api.delete("/v1/services/a").status_code == 200
    assert rig.api.delete("/v1/models/m/versions/1").status_code == 200


def test_placement_honours_gpu_memory(tmp_path: Path) -> None:
    rig = Rig(tmp_path, gpus=[8, 80, 80])
    try:
        rig.model("m")
        too_big = rig.serve("x", gpus=1, gpu_memory="100G")
        assert too_big.status_code == 400 and "largest GPU" in too_big.text, too_big.text
        rig.model("m", serve_yaml("  gpu_memory: 16G\n"))  # m@2 asks for it itself
        rig.svc.gpus.add_foreign(2, 1, 70 << 30)  # type: ignore[attr-defined]
        rig.svc.tick()  # GPU 2 is foreign now
        rig.svc.gpus.clear_foreign()  # type: ignore[attr-defined]
        rig.life._launch = lambda *args: None  # type: ignore[method-assign]
        assert rig.serve("a", model="m@2", gpus=1).status_code == 201
        assert rig.serve("b", gpus=1, gpu_memory="16G").status_code == 201
        rig.step()  # replicas wanted
        rig.step()  # and placed
        a, b = rig.info("a")["replica_info"][0], rig.info("b")["replica_info"][0]
        assert a["gpus"] == [1], a  # not GPU 0: 8 GiB
        assert b["gpus"] == [] and "16.0 GiB of memory free" in b["message"], b
    finally:
        rig.close()


def test_a_replica_is_not_placed_on_gpus_kept_for_a_preempting_job(tmp_path: Path) -> None:
    """GPUs a preemption freed are promised to the job it was for (Plan.promised): a
    replica placed on them would defeat the preemption and start another."""
    rig = Rig(tmp_path)
    try:
        rig.model("m")
        rig.life._launch = lambda *args: None  # type: ignore[method-assign]
        rig.svc.runtime.state.promised = {41: (0,)}
        assert rig.serve("a", gpus=1).status_code == 201
        rig.step()  # replica wanted
        rig.step()  # and placed
        assert rig.info("a")["replica_info"][0]["gpus"] == [1]
    finally:
        rig.svc.runtime.state.promised = {}
        rig.close()


def test_no_slow_work_under_the_lock(rig: Rig) -> None:
    """A replica started, killed, restarted and stopped: every user lookup, log read,
    adoption, signal and removal happened with the lock free."""
    held: list[str] = []
    host = rig.svc.services.host
    for method in ("owner", "log_tail", "adopt", "signal", "remove", "status", "probe"):
        real = getattr(host, method)

        def watched(*args: Any, _real: Any = real, _name: str = method) -> Any:
            if rig.svc.lock.rlock._is_owned():  # type: ignore[attr-defined]
                held.append(_name)
            return _real(*args)

        setattr(host, method, watched)
    assert rig.serve("a").status_code == 201

    def ready() -> dict[str, Any] | None:
        found = rig.info("a")
        return found if found["state"] == "ready" else None

    first = wait_for(ready, timeout=60, what="ready", step=rig.step)["replica_info"][0]
    os.kill(first["pid"], signal.SIGKILL)
    again = wait_for(lambda: (r := ready()) and r["replica_info"][0]["pid"] != first["pid"]
                     and r, timeout=60, what="restarted", step=lambda: rig.step(5))
    assert again["replica_info"][0]["restarts"] == 1
    assert rig.api.delete("/v1/services/a").status_code == 200
    wait_for(lambda: not rig.svc.services.records.get("a")["replica_docs"],  # type: ignore[index]
             timeout=30, what="drained", step=lambda: rig.step(10))
    assert [p.name for p in host.root.iterdir()] == [".removed"]  # on their way out:
    wait_for(lambda: not list(host.removed.iterdir()), timeout=30, what="purged")
    assert held == []


def _enforced(controller: str) -> bool:
    layout = contain.detect()
    return controller in cgroup_limits.survey(layout.kind, layout.root)


@pytest.mark.skipif(not _enforced("memory"), reason="no memory controller for cgroups here")
def test_replicas_get_the_jobs_cgroup_limits(tmp_path: Path) -> None:
    rig = Rig(tmp_path, jobs={"default_memory": "256MiB", "max_memory": "1GiB",
                              "default_cpus": 1})
    try:
        rig.model("m", serve_yaml("  memory: 2G\n"))
        over = rig.serve("x")
        assert over.status_code == 400 and "serve.memory" in over.text, over.text
        rig.model("m", serve_yaml("  memory: 128M\n"))  # m@2 within the maximum
        rig.model("m")  # m@3 names none: the jobs' default
        assert rig.serve("a", model="m@2").status_code == 201
        assert rig.serve("b", model="m@3").status_code == 201

        def both_ready() -> list[dict[str, Any]] | None:
            found = [rig.info(n) for n in ("a", "b")]
            return found if all(f["state"] == "ready" for f in found) else None

        found = wait_for(both_ready, timeout=60, what="ready", step=rig.step)
        limits = rig.svc.runtime.contain.limits
        names = []
        for info, memory in zip(found, (128 << 20, 256 << 20), strict=True):
            pid = info["replica_info"][0]["pid"]
            groups = Path(f"/proc/{pid}/cgroup").read_text()
            name = next(part.rsplit("/", 1)[1] for part in groups.split()
                        if "/svc-" in part)
            names.append(name)
            if "memory" in limits.v2:
                base = rig.svc.runtime.contain.base
                assert base is not None
                assert (base / name / "memory.max").read_text().strip() == str(memory)
            else:
                limit = limits.v1["memory"] / name / "memory.limit_in_bytes"
                assert int(limit.read_text()) == memory
        moved = rig.api.patch("/v1/services/b", json={"model": "m@2"})  # rolls to 128M
        assert moved.status_code == 200, moved.text

        def rolled() -> dict[str, Any] | None:
            found = rig.info("b")["replica_info"]
            return found[0] if [r["model"] for r in found] == ["m@2"] and \
                found[0]["state"] == "ready" else None

        pid = wait_for(rolled, timeout=60, what="rolled", step=rig.step)["pid"]
        groups = Path(f"/proc/{pid}/cgroup").read_text()
        rolled_name = next(part.rsplit("/", 1)[1] for part in groups.split()
                           if "/svc-" in part)
        if "memory" in limits.v1:
            limit = limits.v1["memory"] / rolled_name / "memory.limit_in_bytes"
            assert int(limit.read_text()) == 128 << 20
        rig.api.delete("/v1/services/a")
        wait_for(lambda: not rig.svc.services.records.get("a")["replica_docs"],  # type: ignore[index]
                 timeout=30, what="drained", step=lambda: rig.step(10))
        where = [*(p / names[0] for p in limits.v1.values())]
        if rig.svc.runtime.contain.base is not None:
            where.append(rig.svc.runtime.contain.base / names[0])
        assert not any(p.exists() for p in where), where  # its cgroups went with it
        assert all((p / rolled_name).exists() for p in limits.v1.values())
    finally:
        rig.close()


def test_the_job_tick_reads_the_service_documents_once(rig: Rig) -> None:
    assert rig.serve("a", replicas=0).status_code == 201
    made = rig.api.post("/v1/jobs", json={"spec": {"command": "sleep 30", "gpus": 1}})
    assert made.status_code == 201, made.text
    records = rig.svc.services.records
    real, reads = records.list, []

    def counted() -> list[dict[str, Any]]:
        reads.append(1)
        return real()

    records.list = counted  # type: ignore[method-assign]
    rig.svc.tick()  # foreign processes less replicas', and the GPUs they hold: one read
    assert len(reads) == 1
    with rig.svc.lock:
        before = len(reads)
        life = rig.svc.services.life
        assert life.running() == [] and life.gpu_holders() == {}
        assert len(reads) <= before + 1  # read again only if the store changed since
    rig.api.delete(f"/v1/jobs/{made.json()['id']}")
    rig.svc.tick()
