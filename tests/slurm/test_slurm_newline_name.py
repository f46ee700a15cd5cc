"""On a real cluster, a user renames their own Slurm job with a newline in its name to
forge another user's line in squeue's output (Slurm accepts such a name): the other
user's running job is neither lost nor cancelled, nor sent back to the queue."""

from __future__ import annotations

import json
from collections.abc import Callable

from nai_server.testing import wait_for
from nai_server.testing.slurm_cluster import SlurmCluster
from tests.integration.conftest import Daemon, UnixUser
from tests.slurm.test_slurm_jobs import WAIT, gated, job, slurm_daemon, submit

__all__ = ["slurm_daemon"]  # the fixture, found by name


def _slurm_id(daemon: Daemon, job_id: int) -> int:
    _run, slurm_id = (daemon.state / "jobs" / str(job_id) / "slurm.job").read_text().split()
    return int(slurm_id)


def _as(cluster: SlurmCluster, user: UnixUser, *argv: str) -> str:
    done = cluster.run("setpriv", f"--reuid={user.uid}", f"--regid={user.gid}",
                       "--clear-groups", *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_forged_squeue_line_does_not_end_another_users_job(
        slurm_daemon: Daemon, cluster: SlurmCluster,
        make_user: Callable[[], UnixUser]) -> None:
    daemon = slurm_daemon
    victim, attacker = make_user(), make_user()
    for user in (victim, attacker):
        assert daemon.admin("user", "add", user.name).returncode == 0
    gates = [daemon.root / f"go-{i}" for i in range(3)]
    mine = submit(daemon, victim, command=gated(gates[0]), gpus=0)
    theirs = [submit(daemon, attacker, command=gated(g), gpus=0) for g in gates[1:]]
    wait_for(lambda: [job(daemon, victim, mine)["state"]]
             + [job(daemon, attacker, i)["state"] for i in theirs] == ["running"] * 3,
             timeout=WAIT, what="the three jobs to run")
    key = (daemon.state / "slurm.key").read_text().strip()
    target = _slurm_id(daemon, mine)
    # The victim's line with the attacker's uid (not the victim's job, then: LOST and
    # scancelled as a stray), then PENDING with the victim's own (requeued); a large
    # nice puts it after the victim's real line. Each of the attacker's jobs ends after
    # its rename: the daemon polled the forged name.
    for uid, own, gate in zip((attacker.uid, victim.uid), theirs, gates[1:], strict=True):
        forged = f"x\n{target}|PENDING|Priority|{uid}|N/A|N/A||nai-{key}-{mine}-0"
        _as(cluster, attacker, "scontrol", "update", f"JobId={_slurm_id(daemon, own)}",
            f"JobName={forged}", "Nice=10000")
        gate.touch()
        wait_for(lambda own=own: job(daemon, attacker, own)["state"] == "succeeded",
                 timeout=WAIT, what="the attacker's job to end")
        assert job(daemon, victim, mine)["state"] == "running"
    held = json.loads(cluster.run("squeue", "--json", f"--jobs={target}").stdout)["jobs"]
    assert [j["job_state"] for j in held if j["job_id"] == target] == ["RUNNING"]
    gates[0].touch()
    wait_for(lambda: job(daemon, victim, mine)["state"] == "succeeded", timeout=WAIT,
             what="the victim's job to end as it ran")
    assert job(daemon, victim, mine)["exit_code"] == 0
