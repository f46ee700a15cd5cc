"""Jobs through the real daemon with `launcher: slurm`, as real unix users, on a real
Slurm cluster of one node with 4 fake GPUs: Slurm decides who runs and why a job
waits, and nai shows it; logs, exit codes, cancel, time limits and a daemon killed
with SIGKILL that finds its jobs again and submits nothing twice."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import wait_for
from nai_server.testing.slurm_cluster import SlurmCluster
from tests.integration.conftest import Daemon, UnixUser

WAIT = 60  # seconds: the cluster is shared by the session's tests on a busy machine


@pytest.fixture
def slurm_daemon(cluster: SlurmCluster, daemon_factory: Callable[..., Daemon]) -> Daemon:
    daemon = daemon_factory(
        gpus=0, launcher="slurm",
        slurm={"conf": str(cluster.conf), "accounting": "jobcomp", "poll_seconds": 0.2},
        jobs={"cancel_grace_seconds": 2})
    daemon.start()
    return daemon


def job(daemon: Daemon, user: UnixUser | None, job_id: int) -> dict[str, Any]:
    answer = daemon.as_user(user, "GET", f"/v1/jobs/{job_id}")
    assert answer.status == 200, answer.body
    return answer.json()  # type: ignore[no-any-return]


def submit(daemon: Daemon, user: UnixUser, **spec: Any) -> int:
    answer = daemon.as_user(user, "POST", "/v1/jobs", {"spec": spec})
    assert answer.status in (200, 201), answer.body
    return int(answer.json()["id"])


def states(daemon: Daemon, user: UnixUser, ids: list[int]) -> list[str]:
    return [job(daemon, user, i)["state"] for i in ids]


def ours(cluster: SlurmCluster, daemon: Daemon) -> list[dict[str, Any]]:
    """The Slurm jobs this daemon submitted (its key is in their names)."""
    key = (daemon.state / "slurm.key").read_text().strip()
    jobs = json.loads(cluster.run("squeue", "--json").stdout)["jobs"]
    return [j for j in jobs if j["name"].startswith(f"nai-{key}-")]


def gated(gate: Path, code: int = 0) -> str:
    return (f'echo "gpus=$CUDA_VISIBLE_DEVICES user=$(id -un)"; '
            f"while [ ! -e {gate} ]; do sleep 0.1; done; echo done; "
            f'printf "job %s\\0\\377" "$NAI_JOB_ID" > "$NAI_OUTPUT_DIR/result.bin"; exit {code}')


@pytest.fixture
def alice(slurm_daemon: Daemon, make_user: Callable[[], UnixUser]) -> UnixUser:
    user = make_user()
    assert slurm_daemon.admin("user", "add", user.name).returncode == 0
    return user


def test_slurm_decides_who_runs_and_nai_shows_why_a_job_waits(
        slurm_daemon: Daemon, alice: UnixUser, cluster: SlurmCluster) -> None:
    daemon, gate = slurm_daemon, slurm_daemon.root / "go"
    ids = [submit(daemon, alice, command=gated(gate, code), gpus=2) for code in (0, 3, 0)]
    wait_for(lambda: states(daemon, alice, ids) == ["running", "running", "queued"],
             timeout=WAIT, what="two jobs running and one queued")
    wait_for(lambda: job(daemon, alice, ids[2])["reason"] == "Resources", timeout=WAIT,
             what="the third job to wait for Resources, as Slurm says")

    def logs(job_id: int) -> str:
        return daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}/logs").body.decode()

    wait_for(lambda: all("gpus=" in logs(i) for i in ids[:2]), timeout=WAIT,
             what="the running jobs' first lines")
    seen = [logs(i).split("gpus=")[1].split()[0] for i in ids[:2]]
    assert all(len(s.split(",")) == 2 for s in seen)
    assert set(seen[0].split(",")).isdisjoint(seen[1].split(",")), seen
    assert f"user={alice.name}" in logs(ids[0])

    gate.touch()
    wait_for(lambda: all(s in TERMINAL_STATES for s in states(daemon, alice, ids)),
             timeout=WAIT, what="all three jobs to end")
    ended = [job(daemon, alice, i) for i in ids]
    assert [j["state"] for j in ended] == ["succeeded", "failed", "succeeded"]
    assert [j["exit_code"] for j in ended] == [0, 3, 0]
    assert "done" in logs(ids[2])
    for job_id in ids:  # outputs collected from the job's directory, byte for byte
        out = daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}/outputs/file?path=result.bin")
        assert (out.status, out.body) == (200, f"job {job_id}\0\377".encode("latin-1"))
    assert len(ours(cluster, daemon)) == 3  # each submitted once


def test_cancel_time_limit_and_a_request_slurm_refuses(
        slurm_daemon: Daemon, alice: UnixUser, cluster: SlurmCluster) -> None:
    daemon = slurm_daemon
    forever = "echo up; while true; do sleep 0.1; done"
    running = submit(daemon, alice, command=forever, gpus=2)
    limited = submit(daemon, alice, command=forever, gpus=0, time_limit=2)
    wait_for(lambda: states(daemon, alice, [running]) == ["running"], timeout=WAIT,
             what="the job to run")
    pending = submit(daemon, alice, command=forever, gpus=4)
    wait_for(lambda: job(daemon, alice, pending)["reason"] == "Resources", timeout=WAIT,
             what="the 4-GPU job to wait in Slurm")
    too_big = submit(daemon, alice, command="true", gpus=5)

    def slurm_state(job_id: int) -> str | None:
        names = {j["name"].rsplit("-", 2)[1]: j["job_state"] for j in ours(cluster, daemon)}
        return names.get(str(job_id))

    # Cancelled while it waits in Slurm: nai ends it, and takes it back from Slurm.
    assert daemon.as_user(alice, "DELETE", f"/v1/jobs/{pending}").status == 200
    wait_for(lambda: slurm_state(pending) == "CANCELLED", timeout=WAIT,
             what="Slurm to cancel the job nai cancelled while it waited")
    assert daemon.as_user(alice, "DELETE", f"/v1/jobs/{running}").status == 200
    wait_for(lambda: all(s in TERMINAL_STATES for s in
                         states(daemon, alice, [running, pending, limited, too_big])),
             timeout=WAIT, what="every job to end")
    assert job(daemon, alice, running)["state"] == "cancelled"
    assert job(daemon, alice, pending)["state"] == "cancelled"
    assert job(daemon, alice, limited)["state"] == "timed_out"
    refused = job(daemon, alice, too_big)
    assert refused["state"] == "failed" and "Slurm refused it" in refused["message"]
    # Slurm let go of every one of them: nothing of this daemon's still waits or runs.
    wait_for(lambda: all(j["job_state"] not in ("PENDING", "RUNNING", "COMPLETING")
                         for j in ours(cluster, daemon)),
             timeout=WAIT, what="Slurm to end the cancelled jobs")
    # Each was submitted once (Slurm keeps a record of the refused one too, FAILED).
    names = sorted(j["name"] for j in ours(cluster, daemon))
    assert len(names) == len(set(names)) == 4


def test_a_daemon_killed_with_sigkill_adopts_its_slurm_jobs(
        slurm_daemon: Daemon, alice: UnixUser, cluster: SlurmCluster) -> None:
    daemon, gate = slurm_daemon, slurm_daemon.root / "go"
    ids = [submit(daemon, alice, command=gated(gate, code), gpus=2) for code in (0, 4, 0)]
    wait_for(lambda: states(daemon, alice, ids) == ["running", "running", "queued"],
             timeout=WAIT, what="two running, one waiting in Slurm")
    daemon.stop(signal.SIGKILL)
    daemon.start()
    assert states(daemon, alice, ids) == ["running", "running", "queued"]
    gate.touch()
    wait_for(lambda: all(s in TERMINAL_STATES for s in states(daemon, alice, ids)),
             timeout=WAIT, what="the jobs to end after the restart")
    assert states(daemon, alice, ids) == ["succeeded", "failed", "succeeded"]
    assert job(daemon, alice, ids[1])["exit_code"] == 4
    assert len(ours(cluster, daemon)) == 3  # nothing submitted twice
