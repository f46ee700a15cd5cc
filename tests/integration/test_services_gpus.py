"""Services share the GPUs with training jobs: a replica's GPU is held for the
scheduler (a job never gets it, nor preempts it), quotas count replicas and refuse a
service that could never fit them, and a model whose server keeps dying makes its
service fail with the last lines of its log."""

from __future__ import annotations

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


def job(daemon: Daemon, user, gpus: int) -> int:
    made = daemon.as_user(user, "POST", "/v1/jobs", {"spec": {
        "command": "sleep 600", "gpus": gpus}})
    assert made.status == 201, made.body
    return int(made.json()["id"])


def job_info(daemon: Daemon, job_id: int) -> dict:
    with daemon.client() as root:
        return dict(root.get(f"/v1/jobs/{job_id}").json())


def test_service_and_jobs_share_the_gpus(daemon: Daemon, make_user, reaper) -> None:
    user = make_user()
    reaper.append((daemon, user))
    register_user(daemon, user)
    register_model(daemon, user, "adder")
    assert daemon.as_user(user, "POST", "/v1/services",
                          {"name": "adder", "model": "adder", "gpus": 1}).status == 201
    wait_state(daemon, "adder", "ready")
    narrow = job(daemon, user, 1)
    running = wait_for(lambda: (i := job_info(daemon, narrow))["state"] == "running" and i,
                       what="the one-GPU job to run")
    assert running["gpus"] == [1]  # not the replica's GPU 0
    with daemon.client() as root:
        root.delete(f"/v1/jobs/{narrow}")
    wide = job(daemon, user, 2)  # needs both GPUs: one is the service's
    wait_for(lambda: job_info(daemon, narrow)["state"] == "cancelled", what="cancelled")
    # The scheduler planned it and found no room: the replica's GPU is held.
    held = wait_for(lambda: (i := job_info(daemon, wide))["reason"] and i, what="a reason")
    assert held["state"] == "queued" and held["reason"].lower() == "resources", held
    assert info(daemon, "adder")["replica_info"][0]["gpus"] == [0]  # never preempted
    assert job_info(daemon, wide)["state"] == "queued"
    with daemon.client() as root:
        assert root.delete("/v1/services/adder").status_code == 200
    started = wait_for(lambda: (i := job_info(daemon, wide))["state"] == "running" and i,
                       what="the two-GPU job to get the service's GPU once it stopped")
    assert started["gpus"] == [0, 1]
    with daemon.client() as root:
        root.delete(f"/v1/jobs/{wide}")


def test_quota_refuses_and_holds_replicas(daemon: Daemon, make_user, reaper) -> None:
    user = make_user()
    reaper.append((daemon, user))
    register_user(daemon, user)
    register_model(daemon, user, "adder")
    with daemon.client() as root:
        assert root.put(f"/v1/users/{user.name}/quota", json={"max_gpus": 1}).status_code == 200
    over = daemon.as_user(user, "POST", "/v1/services",
                          {"name": "big", "model": "adder", "gpus": 1, "replicas": 2})
    assert over.status == 403, over.body
    assert "quota" in over.json()["error"]["message"]
    too_wide = daemon.as_user(user, "POST", "/v1/services",
                              {"name": "big", "model": "adder", "gpus": 3})
    assert too_wide.status == 400, too_wide.body
    # Within the quota, but the user's job holds their one GPU: the replica waits.
    holder = job(daemon, user, 1)
    wait_for(lambda: job_info(daemon, holder)["state"] == "running", what="the job to run")
    assert daemon.as_user(user, "POST", "/v1/services",
                          {"name": "small", "model": "adder", "gpus": 1}).status == 201

    def waiting() -> bool:
        replicas = info(daemon, "small")["replica_info"]
        return bool(replicas) and "quota" in (replicas[0]["message"] or "")

    wait_for(waiting, what="the replica to wait for the quota")
    assert info(daemon, "small")["state"] == "pending"
    with daemon.client() as root:
        root.delete(f"/v1/jobs/{holder}")
    assert wait_state(daemon, "small", "ready")["replica_info"][0]["gpus"] in ([0], [1])
    # And the other way round: the replica's GPU counts against the user's jobs.
    later = job(daemon, user, 1)
    held = wait_for(lambda: (i := job_info(daemon, later))["reason"] and i, what="a reason")
    assert held["state"] == "queued" and "quota" in held["reason"].lower(), held
    with daemon.client() as root:
        root.delete(f"/v1/jobs/{later}")


def test_a_replica_that_keeps_dying_fails_the_service(daemon_factory, make_user,
                                                      reaper) -> None:
    daemon = daemon_factory(services={"max_restarts": 3})
    daemon.start()
    user = make_user()
    reaper.append((daemon, user))
    register_user(daemon, user)
    crash = b"serve:\n  command: echo model file is corrupt >&2; exit 3\n"
    register_model(daemon, user, "broken", serve=crash)
    assert daemon.as_user(user, "POST", "/v1/services",
                          {"name": "broken", "model": "broken", "gpus": 1}).status == 201
    failed = wait_state(daemon, "broken", "failed")
    assert "failed 3 times" in failed["message"]
    assert "model file is corrupt" in failed["message"]  # the log's last lines
    wait_for(lambda: not info(daemon, "broken")["replica_info"], what="no replica left")
    with daemon.client() as root:
        gpus = root.get("/v1/gpus").json()["gpus"]
    assert all(g["service"] is None for g in gpus)  # its GPU is free again
    answer = daemon.as_user(user, "GET", "/v1/services/broken/invoke/health")
    assert answer.status == 503 and "failed" in answer.json()["error"]["message"]


def test_a_replica_that_exits_78_fails_its_service_at_once(daemon_factory, make_user,
                                                           reaper) -> None:
    """Status 78 (EX_CONFIG): the replica says that starting it again cannot help (a
    wrong option), so the service fails on its first exit, with its log's last lines,
    instead of being restarted until too many failures."""
    daemon = daemon_factory(services={"max_restarts": 3})
    daemon.start()
    user = make_user()
    reaper.append((daemon, user))
    register_user(daemon, user)
    wrong = b"serve:\n  command: echo no option named 'batch' >&2; exit 78\n"
    register_model(daemon, user, "wrong", serve=wrong)
    assert daemon.as_user(user, "POST", "/v1/services",
                          {"name": "wrong", "model": "wrong", "gpus": 1}).status == 201
    failed = wait_state(daemon, "wrong", "failed")
    assert "exited with status 78" in failed["message"], failed
    assert "no option named batch" in failed["message"]  # the log's last lines
    assert "failed 3 times" not in failed["message"]


def test_another_user_cannot_read_a_replicas_model(daemon: Daemon, make_user,
                                                   reaper) -> None:
    """A replica's folder lets its owner alone pass through (as a job's): the model's
    read-only files below it are out of other users' reach, even knowing its path."""
    import subprocess

    owner, other = make_user(), make_user()
    reaper.append((daemon, owner))
    for user in (owner, other):
        register_user(daemon, user)
    register_model(daemon, owner, "private", weights="secret weights")
    assert daemon.as_user(owner, "POST", "/v1/services",
                          {"name": "private", "model": "private", "gpus": 0}).status == 201
    wait_state(daemon, "private", "ready")
    weights = next((daemon.state / "services").glob("*/model/weights.txt"))

    def cat(user) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
        return subprocess.run(["cat", str(weights)], capture_output=True, text=True,
                              timeout=30, user=user.uid, group=user.gid, extra_groups=[])

    assert cat(owner).stdout == "secret weights"
    got = cat(other)
    assert got.returncode != 0 and "secret" not in got.stdout, got
    with daemon.client() as root:
        assert root.delete("/v1/services/private").status_code == 200
