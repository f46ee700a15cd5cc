"""`nodes: 2` through the real daemon on a two-node Slurm cluster (two slurmd on this
host): the command runs once per node, each rank with the variables torchrun and
accelerate read (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, NODE_RANK)."""

from __future__ import annotations

import re
from collections.abc import Callable

from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import wait_for
from nai_server.testing.slurm_cluster import SlurmCluster
from tests.integration.conftest import Daemon, UnixUser

PRINT_ENV = ('echo "rank=$RANK node_rank=$NODE_RANK world=$WORLD_SIZE '
             'master=$MASTER_ADDR:$MASTER_PORT node=$SLURMD_NODENAME gpus=$CUDA_VISIBLE_DEVICES '
             'job=$NAI_JOB_ID"')


def test_a_two_node_job_runs_once_per_node_with_its_rank(
        two_nodes: SlurmCluster, daemon_factory: Callable[..., Daemon],
        make_user: Callable[[], UnixUser]) -> None:
    daemon = daemon_factory(gpus=0, launcher="slurm", slurm={
        "conf": str(two_nodes.conf), "accounting": "jobcomp", "poll_seconds": 0.2})
    daemon.start()
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    answer = daemon.as_user(alice, "POST", "/v1/jobs",
                            {"spec": {"command": PRINT_ENV, "gpus": 1, "nodes": 2}})
    assert answer.status == 201, answer.body
    job_id = answer.json()["id"]
    wait_for(lambda: daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}").json()["state"]
             in TERMINAL_STATES, timeout=60, what="the two-node job to end")
    info = daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}").json()
    log = daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}/logs").body.decode()
    assert info["state"] == "succeeded", (info, log)
    ranks = sorted(re.findall(r"rank=(\S*) node_rank=(\S*) world=(\S*) master=(\S*) "
                              r"node=(\S*) gpus=(\S*) job=(\S*)", log))
    assert [(r[0], r[1], r[2]) for r in ranks] == [("0", "0", "2"), ("1", "1", "2")], log
    assert {r[4] for r in ranks} == set(two_nodes.node_names)  # one rank on each node
    masters = {r[3] for r in ranks}
    assert len(masters) == 1 and masters.pop().startswith(f"{two_nodes.node_names[0]}:")
    assert all(r[5] == "0" and r[6] == str(job_id) for r in ranks)  # its GPU, its job
