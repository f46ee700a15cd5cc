"""Nothing is submitted twice: a daemon stopped after sbatch answered but before it
wrote down the Slurm id finds the job by its name when it starts again."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from nai_server.app.accounts import Caller
from nai_server.app.use_cases import UseCases
from nai_server.core.spec import spec_from_dict
from nai_server.core.states import JobState
from nai_server.testing import make_service, wait_for
from nai_server.testing.slurm_cluster import SlurmCluster
from tests.integration.conftest import UnixUser


def _service(cluster: SlurmCluster, state: Path) -> UseCases:
    return make_service(state, mode="personal", gpus=0, launcher="slurm",
                        slurm={"conf": str(cluster.conf), "accounting": "jobcomp",
                               "poll_seconds": 0.01})


def _state(service: UseCases, job_id: int) -> JobState:
    service.tick()
    with service.lock:
        job = service.runtime.jobs.get(job_id)
    assert job is not None
    return job.state


def test_a_daemon_stopped_mid_submit_adopts_the_job_by_its_name(
        cluster: SlurmCluster, tmp_path: Path) -> None:
    state, gate = tmp_path / "state", tmp_path / "go"
    first = _service(cluster, state)
    root = Caller("root", uid=0, admin=True)
    spec = spec_from_dict({"command": f"while [ ! -e {gate} ]; do sleep 0.1; done",
                           "gpus": 1})
    job_id = first.jobs.submit(root, spec, None).id
    first.tick()
    record = state / "jobs" / str(job_id) / "slurm.job"
    run, slurm_id = record.read_text().split()
    assert run == "0" and slurm_id.isdigit()
    record.write_text("0 -\n")  # as if the daemon died as sbatch answered
    first.close()

    second = _service(cluster, state)
    wait_for(lambda: _state(second, job_id) == JobState.RUNNING, timeout=60,
             what="the restarted daemon to find the running job")
    assert record.read_text().split() == ["0", slurm_id]
    key = (state / "slurm.key").read_text().strip()
    named = [j for j in json.loads(cluster.run("squeue", "--json").stdout)["jobs"]
             if j["name"] == f"nai-{key}-{job_id}-0"]
    assert [j["job_id"] for j in named] == [int(slurm_id)]
    gate.touch()
    wait_for(lambda: _state(second, job_id) == JobState.SUCCEEDED, timeout=60,
             what="the adopted job to end")
    second.close()


def test_a_job_named_like_ours_by_someone_else_is_never_adopted(
        cluster: SlurmCluster, tmp_path: Path, make_user: Callable[[], UnixUser]) -> None:
    alice, mallory = make_user(), make_user()
    state = tmp_path / "state"
    service = make_service(state, mode="multi-user", gpus=0, launcher="slurm",
                           slurm={"conf": str(cluster.conf), "accounting": "jobcomp",
                                  "poll_seconds": 0.01})
    key = (state / "slurm.key").read_text().strip()
    assert (state / "slurm.key").stat().st_mode & 0o077 == 0  # no one else learns it
    # Someone else on the cluster names a job as nai would name alice's first job.
    decoy = cluster.run("sbatch", "--parsable", f"--uid={mallory.uid}",
                        f"--gid={mallory.gid}", f"--job-name=nai-{key}-1-0", "--chdir=/tmp",
                        "--output=/dev/null", "--wrap", "sleep 30")
    assert decoy.returncode == 0, decoy.stderr
    job_id = service.jobs.submit(Caller(alice.name, uid=alice.uid, admin=False),
                                 spec_from_dict({"command": "sleep 30", "gpus": 1}), None).id
    assert job_id == 1
    service.tick()
    record = state / "jobs" / "1" / "slurm.job"
    real = record.read_text().split()[1]
    record.write_text("0 -\n")  # stopped mid-submit: the daemon looks the name up
    service.tick()
    assert record.read_text().split() == ["0", real]
    assert int(real) > int(decoy.stdout.split(";")[0])  # the decoy came first
    service.close()
    for slurm_id in (real, decoy.stdout.strip()):
        cluster.run("scancel", slurm_id)
