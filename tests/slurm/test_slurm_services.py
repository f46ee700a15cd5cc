"""Services on Slurm (`launcher: slurm`): a served model's replica is a Slurm job of
its owner, placed by Slurm on its GPUs, proxied by the daemon as on one server; a
replica that waits in Slurm's queue shows `pending` with Slurm's reason; stopping the
service cancels the job; a daemon killed with -9 finds its replica again and submits
nothing twice. Real daemon, real cluster (one node, 4 fake GPUs), real unix users."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nai_server.store.db import TinyDbStore
from nai_server.store.service_records import ServiceRecords
from nai_server.testing import wait_for
from nai_server.testing.slurm_cluster import SlurmCluster
from tests.integration.conftest import Daemon, UnixUser, upload_as

WAIT = 90  # seconds: a replica's Python start on a busy shared machine
PREDICT = b'''
import os

def load(model_dir):
    global SCALE
    SCALE = float(open(os.path.join(model_dir, "scale.txt")).read())

def predict(inputs):
    return {"sum": sum(inputs) * SCALE, "uid": os.getuid(),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "slurm": os.environ.get("SLURM_JOB_ID"),
            "node": os.environ.get("SLURMD_NODENAME")}
'''


@pytest.fixture
def slurm_daemon(cluster: SlurmCluster, daemon_factory: Callable[..., Daemon]) -> Daemon:
    daemon = daemon_factory(
        gpus=0, launcher="slurm",
        slurm={"conf": str(cluster.conf), "accounting": "jobcomp", "poll_seconds": 0.2},
        services={"stop_grace_seconds": 2})
    daemon.start()
    return daemon


@pytest.fixture
def alice(slurm_daemon: Daemon, make_user: Callable[[], UnixUser]) -> UnixUser:
    user = make_user()
    assert slurm_daemon.admin("user", "add", user.name).returncode == 0
    return user


OWN_SERVER = Path(__file__).parent.parent / "integration" / "service_model" / "server.py"


def register_model(daemon: Daemon, user: UnixUser, name: str,
                   files: dict[str, bytes] | None = None) -> None:
    files = files or {"predict.py": PREDICT, "scale.txt": b"2"}
    tree = upload_as(daemon, user, files)
    made = daemon.as_user(user, "POST", "/v1/models", {"name": name, "tree_id": tree})
    if made.status == 409:  # a next version
        made = daemon.as_user(user, "POST", f"/v1/models/{name}/versions", {"tree_id": tree})
    assert made.status == 201, made.body


def show(daemon: Daemon, user: UnixUser, name: str) -> dict[str, Any]:
    got = daemon.as_user(user, "GET", f"/v1/services/{name}")
    assert got.status == 200, got.body
    return got.json()  # type: ignore[no-any-return]


def replica_jobs(cluster: SlurmCluster, daemon: Daemon) -> list[dict[str, Any]]:
    """The Slurm jobs of this daemon's replicas, in any state squeue remembers."""
    key = (daemon.state / "slurm.key").read_text().strip()
    jobs = json.loads(cluster.run("squeue", "--json", "--states=all").stdout)["jobs"]
    return [j for j in jobs if j["name"].startswith(f"nai-{key}-svc-")]


def live(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ended = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL")
    return [j for j in jobs if str(j["job_state"]).split()[0] not in ended]


def wait_ready(daemon: Daemon, user: UnixUser, name: str) -> dict[str, Any]:
    try:
        return wait_for(lambda: (s := show(daemon, user, name))["state"] == "ready" and s,
                        timeout=WAIT, what=f"service {name} ready")
    except AssertionError:
        print(show(daemon, user, name), daemon.log()[-4000:])
        raise


def test_a_replica_is_a_slurm_job_of_its_owner_proxied_by_the_daemon(
        slurm_daemon: Daemon, alice: UnixUser, cluster: SlurmCluster) -> None:
    daemon = slurm_daemon
    register_model(daemon, alice, "adder")
    made = daemon.as_user(alice, "POST", "/v1/services",
                          {"name": "adder", "model": "adder@1", "gpus": 2})
    assert made.status == 201, made.body
    ready = wait_ready(daemon, alice, "adder")
    [job] = live(replica_jobs(cluster, daemon))
    assert job["user_id"] == alice.uid and str(job["job_state"]).startswith("RUNNING")
    assert ready["replica_info"][0]["pid"] is None  # not a process of the daemon's host

    answer = daemon.as_user(alice, "POST", "/v1/services/adder/invoke/predict",
                            {"inputs": [1, 2, 3.5]})
    assert answer.status == 200, answer.body
    out = answer.json()["outputs"]
    assert out["sum"] == 13.0 and out["uid"] == alice.uid  # as its owner, not root
    assert out["slurm"] == str(job["job_id"]) and len(out["gpus"].split(",")) == 2
    # Reached over the TCP link (any node), not the unix socket: the run's token is
    # alice's alone, and the replica said where it listens.
    [where] = [p for p in (daemon.state / "services").iterdir() if (p / "token").exists()]
    token = (where / "token").stat()
    assert (token.st_uid, token.st_mode & 0o777) == (alice.uid, 0o400)
    assert (where / "run" / "address").read_text().strip().rpartition(":")[2].isdigit()
    assert not (where / "run" / "serve.sock").exists()
    # `nai gpus` shows the cluster's GPUs: two held by the replica, named as the service.
    gpus = daemon.as_user(alice, "GET", "/v1/gpus").json()["gpus"]
    held = [(g["service"], g["user"], g["job"]) for g in gpus if g["slurm_job"] == job["job_id"]]
    assert held == [("adder", alice.name, None)] * 2, gpus
    # Its log, written by Slurm (--output) on the shared state dir, read as on one server.
    log = daemon.as_user(alice, "GET", "/v1/services/adder/logs?replica=0").body.decode()
    assert "nai replica: adder@1 loaded" in log, log

    # Three 2-GPU replicas on 4 GPUs: one waits in Slurm's queue, with Slurm's reason.
    scaled = daemon.as_user(alice, "PATCH", "/v1/services/adder", {"replicas": 3})
    assert scaled.status == 200, scaled.body
    wait_for(lambda: any(r["state"] == "pending" and "Resources" in (r["message"] or "")
                         for r in show(daemon, alice, "adder")["replica_info"])
             or None, timeout=WAIT, what="a replica pending for Slurm's Resources")
    assert len(live(replica_jobs(cluster, daemon))) == 3  # one Slurm job each, no more

    stopped = daemon.as_user(alice, "DELETE", "/v1/services/adder")
    assert stopped.status == 200, stopped.body
    wait_for(lambda: not live(replica_jobs(cluster, daemon)), timeout=WAIT,
             what="the replicas' Slurm jobs to end")
    assert show(daemon, alice, "adder")["state"] == "stopped"


def test_a_daemon_killed_with_a_replica_running_adopts_it(
        slurm_daemon: Daemon, alice: UnixUser, cluster: SlurmCluster) -> None:
    daemon = slurm_daemon
    register_model(daemon, alice, "adder")
    made = daemon.as_user(alice, "POST", "/v1/services",
                          {"name": "adder", "model": "adder@1", "gpus": 1})
    assert made.status == 201, made.body
    wait_ready(daemon, alice, "adder")
    [before] = live(replica_jobs(cluster, daemon))
    daemon.stop(signal.SIGKILL)
    daemon.start()
    wait_ready(daemon, alice, "adder")
    answer = daemon.as_user(alice, "POST", "/v1/services/adder/invoke/predict",
                            {"inputs": [1]})
    assert answer.status == 200, answer.body
    assert answer.json()["outputs"]["slurm"] == str(before["job_id"])  # the same job
    assert [j["job_id"] for j in live(replica_jobs(cluster, daemon))] == [before["job_id"]]
    daemon.as_user(alice, "DELETE", "/v1/services/adder")
    wait_for(lambda: not live(replica_jobs(cluster, daemon)), timeout=WAIT,
             what="the replica's Slurm job to end")


def test_a_daemon_killed_mid_submit_finds_its_replica_by_name_and_owner(
        slurm_daemon: Daemon, alice: UnixUser, cluster: SlurmCluster,
        make_user: Callable[[], UnixUser]) -> None:
    daemon, mallory = slurm_daemon, make_user()
    key = (daemon.state / "slurm.key").read_text().strip()
    # Someone else names a job as nai will name the first replica (service 1, run 1).
    decoy = cluster.run("sbatch", "--parsable", f"--uid={mallory.uid}",
                        f"--gid={mallory.gid}", f"--job-name=nai-{key}-svc-1.1",
                        "--chdir=/tmp", "--output=/dev/null", "--wrap", "sleep 300")
    assert decoy.returncode == 0, decoy.stderr
    register_model(daemon, alice, "adder")
    made = daemon.as_user(alice, "POST", "/v1/services",
                          {"name": "adder", "model": "adder@1", "gpus": 1})
    assert made.status == 201, made.body
    wait_ready(daemon, alice, "adder")
    [real] = [j for j in live(replica_jobs(cluster, daemon)) if j["user_id"] == alice.uid]
    assert real["job_id"] > int(decoy.stdout.split(";")[0])  # the decoy came first
    daemon.stop(signal.SIGKILL)
    # As if it died as sbatch answered: neither the record nor the service has the id.
    where = daemon.state / "services" / "1.1"
    (where / "slurm.job").write_text("0 -\n")
    store = TinyDbStore(daemon.state)
    records = ServiceRecords(store)
    doc = records.get("adder")
    assert doc is not None and doc["replica_docs"][0]["handle"] == f"slurm:{real['job_id']}"
    doc["replica_docs"][0]["handle"] = None
    records.put(doc)
    store.close()

    daemon.start()
    wait_for(lambda: (where / "slurm.job").read_text().split() == ["0", str(real["job_id"])],
             timeout=WAIT, what="the replica's Slurm job found by its name")
    wait_ready(daemon, alice, "adder")
    answer = daemon.as_user(alice, "POST", "/v1/services/adder/invoke/predict",
                            {"inputs": [1]})
    assert answer.status == 200, answer.body
    assert answer.json()["outputs"]["slurm"] == str(real["job_id"])
    assert sorted(j["job_id"] for j in live(replica_jobs(cluster, daemon))) == sorted(
        [int(decoy.stdout.split(";")[0]), real["job_id"]])  # nothing submitted again


def test_a_replica_slurm_can_never_run_fails_the_service_with_slurms_words(
        slurm_daemon: Daemon, alice: UnixUser, cluster: SlurmCluster) -> None:
    daemon = slurm_daemon
    register_model(daemon, alice, "adder")
    made = daemon.as_user(alice, "POST", "/v1/services",  # 64 GPUs: the node has 4
                          {"name": "adder", "model": "adder@1", "gpus": 64})
    assert made.status == 201, made.body
    failed = wait_for(lambda: (s := show(daemon, alice, "adder"))["state"] == "failed" and s,
                      timeout=WAIT, what="the service to fail")
    assert failed["message"].startswith("replica 0 could not start: Slurm refused it"), failed
    assert failed["replica_info"] == [] or all(
        r["state"] == "failed" for r in failed["replica_info"])
    assert not live(replica_jobs(cluster, daemon))
    too_big = daemon.as_user(alice, "POST", "/v1/services",
                             {"name": "big", "model": "adder@1", "gpus": 65})
    assert too_big.status == 400 and "gpus" in too_big.body.decode()


def test_replicas_on_two_nodes_answer_through_the_proxy(
        two_nodes: SlurmCluster, daemon_factory: Callable[..., Daemon],
        make_user: Callable[[], UnixUser]) -> None:
    daemon = daemon_factory(gpus=0, launcher="slurm", slurm={
        "conf": str(two_nodes.conf), "accounting": "jobcomp", "poll_seconds": 0.2})
    daemon.start()
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    register_model(daemon, alice, "adder")
    made = daemon.as_user(alice, "POST", "/v1/services",  # one GPU a node: one replica each
                          {"name": "adder", "model": "adder@1", "gpus": 1, "replicas": 2})
    assert made.status == 201, made.body
    wait_for(lambda: [r["state"] for r in show(daemon, alice, "adder")["replica_info"]]
             == ["ready", "ready"], timeout=WAIT, what="both replicas ready")
    nodes = set()
    for _ in range(20):
        answer = daemon.as_user(alice, "POST", "/v1/services/adder/invoke/predict",
                                {"inputs": [1]})
        assert answer.status == 200, answer.body
        nodes.add(answer.json()["outputs"]["node"])
        if len(nodes) == 2:
            break
    assert nodes == set(two_nodes.node_names)
    daemon.as_user(alice, "DELETE", "/v1/services/adder")
    wait_for(lambda: not live(replica_jobs(two_nodes, daemon)), timeout=WAIT,
             what="the replicas' Slurm jobs to end")


def test_a_models_own_server_is_reached_through_the_relay_beside_it(
        slurm_daemon: Daemon, alice: UnixUser, cluster: SlurmCluster) -> None:
    daemon = slurm_daemon
    register_model(daemon, alice, "own", {
        "nai.yaml": b"serve:\n  command: python server.py\n  health: /health\n",
        "server.py": OWN_SERVER.read_bytes(), "weights.txt": b"w7"})
    made = daemon.as_user(alice, "POST", "/v1/services",
                          {"name": "own", "model": "own@1", "gpus": 1})
    assert made.status == 201, made.body
    wait_ready(daemon, alice, "own")
    answer = daemon.as_user(alice, "POST", "/v1/services/own/invoke/predict",
                            {"inputs": [1, 2]})
    assert answer.status == 200, answer.body
    assert answer.json() == {"sum": 3, "weights": "w7"}
    who = daemon.as_user(alice, "GET", "/v1/services/own/invoke/whoami").json()
    assert who["uid"] == alice.uid
    [where] = [p for p in (daemon.state / "services").iterdir() if (p / "token").exists()]
    assert (where / "run" / "address").exists()  # the relay's port, not the socket
    daemon.as_user(alice, "DELETE", "/v1/services/own")
    wait_for(lambda: not live(replica_jobs(cluster, daemon)), timeout=WAIT,
             what="the replica's Slurm job to end")


def test_a_groups_service_is_charged_to_the_groups_slurm_account(
        cluster: SlurmCluster, daemon_factory: Callable[..., Daemon],
        make_user: Callable[[], UnixUser]) -> None:
    daemon = daemon_factory(gpus=0, launcher="slurm", slurm={
        "conf": str(cluster.conf), "accounting": "jobcomp", "poll_seconds": 0.2,
        "accounts": {"lab": "proj-lab"}})
    daemon.start()
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    assert daemon.admin("group", "add", "lab").returncode == 0
    assert daemon.admin("group", "add-member", "lab", alice.name).returncode == 0
    register_model(daemon, alice, "adder")
    made = daemon.as_user(alice, "POST", "/v1/services",
                          {"name": "adder", "model": "adder@1", "gpus": 1, "group": "lab"})
    assert made.status == 201, made.body
    wait_ready(daemon, alice, "adder")
    [job] = live(replica_jobs(cluster, daemon))
    listed = cluster.run("squeue", "-h", "-j", str(job["job_id"]), "-o", "%a")
    assert listed.stdout.strip() == "proj-lab" and job["user_id"] == alice.uid


def test_an_update_rolls_to_a_new_slurm_job_and_cancels_the_old_one(
        slurm_daemon: Daemon, alice: UnixUser, cluster: SlurmCluster) -> None:
    daemon = slurm_daemon
    register_model(daemon, alice, "adder")
    made = daemon.as_user(alice, "POST", "/v1/services",
                          {"name": "adder", "model": "adder@1", "gpus": 1})
    assert made.status == 201, made.body
    wait_ready(daemon, alice, "adder")
    [old] = live(replica_jobs(cluster, daemon))
    register_model(daemon, alice, "adder", {"predict.py": PREDICT, "scale.txt": b"3"})
    updated = daemon.as_user(alice, "PATCH", "/v1/services/adder", {"model": "adder@2"})
    assert updated.status == 200, updated.body

    def rolled() -> bool:
        info = show(daemon, alice, "adder")
        return [(r["model"], r["state"]) for r in info["replica_info"]] == [
            ("adder@2", "ready")] and [j["job_id"] for j in live(replica_jobs(
                cluster, daemon))] not in ([], [old["job_id"]])
    wait_for(rolled, timeout=WAIT, what="the new version's replica alone")
    answer = daemon.as_user(alice, "POST", "/v1/services/adder/invoke/predict",
                            {"inputs": [1]})
    assert answer.json()["outputs"]["sum"] == 3.0
    assert answer.json()["outputs"]["slurm"] != str(old["job_id"])
    wait_for(lambda: old["job_id"] not in [j["job_id"] for j in live(
        replica_jobs(cluster, daemon))], timeout=WAIT, what="the old replica's job to end")
