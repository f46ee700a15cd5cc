"""The test cluster itself: a batch job as a plain user gets its own fake GPUs and an
exit code that Slurm reports after the job ended (jobcomp, no database)."""

from __future__ import annotations

from collections.abc import Callable

from nai_server.testing import wait_for
from nai_server.testing.slurm_cluster import SlurmCluster
from tests.integration.conftest import UnixUser


def test_a_batch_job_gets_gpus_and_its_exit_code(cluster: SlurmCluster,
                                                 make_user: Callable[[], UnixUser]) -> None:
    user = make_user()
    out = user.home / "out.txt"
    submitted = cluster.run("sbatch", "--parsable", f"--uid={user.uid}", f"--gid={user.gid}",
                            "--gres=gpu:2", f"--chdir={user.home}", f"--output={out}",
                            "--wrap", "echo gpus=$CUDA_VISIBLE_DEVICES user=$(id -un); exit 3")
    assert submitted.returncode == 0, submitted.stderr
    slurm_id = submitted.stdout.strip().split(";")[0]

    def ended() -> str:
        done = cluster.run("sacct", "-c", "-n", "-P", "-j", slurm_id, "-o", "State,ExitCode")
        return done.stdout.strip()

    assert wait_for(ended, what="the job in Slurm's completion log") == "FAILED|3:0"
    text = out.read_text()
    assert f"user={user.name}" in text
    assert len(text.split("gpus=")[1].split()[0].split(",")) == 2
