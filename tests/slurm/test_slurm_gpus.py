"""`nai gpus` with `launcher: slurm`: the cluster's GPUs node by node, each with who
holds it (a nai job and its owner, or another Slurm job and its unix user), instead
of the login node's own GPUs; `/v1/usage` counts a job's GPUs there as its owner's.
Slurm's text is read by pure functions (first), then the real daemon lists a real
cluster's GPUs."""

from __future__ import annotations

import json
from collections.abc import Callable

from nai_server.host.launchers import slurm_gpus
from nai_server.host.launchers.slurm_text import SlurmJob, parse_squeue_json
from nai_server.protocol import GpuList
from nai_server.testing import wait_for
from nai_server.testing.slurm_cluster import SlurmCluster
from nai_tui.cli import output
from tests.integration.conftest import Daemon, UnixUser

NODES = (
    "NodeName=n01 Arch=x86_64 Gres=gpu:a100:2(S:0) State=MIXED Partitions=main\n"
    "NodeName=n02 Gres=gpu:1,shard:8 State=IDLE+DRAIN\n"
    "NodeName=cpu1 Gres=(null) State=IDLE\n"
    "garbage line\n")


def test_hostlists_node_gres_and_job_gres_are_read() -> None:
    assert slurm_gpus.expand_hostlist("n[01-03,7],gpu5") == ["n01", "n02", "n03", "n7", "gpu5"]
    assert slurm_gpus.expand_hostlist("a[1-2]b,c") == ["a1b", "a2b", "c"]
    assert slurm_gpus.expand_hostlist("n[x-y]") == []
    assert slurm_gpus.expand_hostlist("n[1-99999999]") == []  # not a billion names
    nodes = slurm_gpus.parse_nodes(NODES)
    assert [(n.name, n.state, n.gpus) for n in nodes] == [
        ("n01", "mixed", ("a100", "a100")), ("n02", "idle+drain", ("gpu",)), ("cpu1", "idle", ())]
    squeue = json.dumps({"jobs": [
        {"job_id": 5, "name": "nai-k-12-0", "user_id": 0, "job_state": "RUNNING",
         "nodes": "n[01-02]", "gres_detail": ["gpu:a100:1(IDX:1)", "gpu:1(IDX:0)"]},
        {"job_id": 6, "name": "x", "user_id": 0, "job_state": "PENDING", "nodes": "",
         "gres_detail": "gpu:1(IDX:0)"},  # not a list: ignored
        {"job_id": 7, "name": "other", "user_id": 0, "job_state": "RUNNING", "nodes": "n01",
         "gres_detail": ["gpu:a100:1(IDX:0)"]}]})
    jobs = parse_squeue_json(squeue)
    assert jobs[6].gres == ()
    held = slurm_gpus.holders(jobs.values())
    assert {k: v.slurm_id for k, v in held.items()} == {
        ("n01", 1): 5, ("n02", 0): 5, ("n01", 0): 7}
    listing = slurm_gpus.listing(nodes, jobs.values(), {5: 12}.get, {12: "alice"}.get,
                                 "fake", 4, 0)
    rows = [(g.index, g.node, g.name, g.job, g.user, g.slurm_job) for g in listing.gpus]
    assert rows == [(0, "n01", "a100", None, "root", 7), (1, "n01", "a100", 12, "alice", 5),
                    (2, "n02", "gpu (idle+drain)", 12, "alice", 5)]
    assert listing.cluster == "slurm"
    cells = [output.gpu_cells(g) for g in listing.gpus]  # `nai gpus`' rows
    assert [(c[1], c[-1]) for c in cells] == [("n01: a100", "Slurm job 7 (root)"),
                                              ("n01: a100", "job 12 (alice)"),
                                              ("n02: gpu (idle+drain)", "job 12 (alice)")]
    # A job named like ours is someone else's unless nai's records say it is ours, and
    # one of ours whose nai job is not running is no one's nai job.
    other = SlurmJob(9, "nai-k-12-0", 0, "RUNNING", nodes="n02", gres=("gpu:1(IDX:0)",))
    again = slurm_gpus.listing(nodes, [other], {5: 12}.get, {12: "alice"}.get, "fake", 4, 0)
    assert (again.gpus[2].job, again.gpus[2].user, again.gpus[2].slurm_job) == (None, "root", 9)
    again = slurm_gpus.listing(nodes, [other], {9: 99}.get, {12: "alice"}.get, "fake", 4, 0)
    assert (again.gpus[2].job, again.gpus[2].user, again.gpus[2].slurm_job) == (None, "root", 9)


def test_nai_gpus_lists_the_clusters_gpus_and_who_holds_them(
        cluster: SlurmCluster, daemon_factory: Callable[..., Daemon],
        make_user: Callable[[], UnixUser]) -> None:
    daemon = daemon_factory(gpus=1, launcher="slurm", slurm={
        "conf": str(cluster.conf), "accounting": "jobcomp", "poll_seconds": 0.2})
    daemon.start()
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    gate = daemon.root / "go"
    sent = daemon.as_user(alice, "POST", "/v1/jobs", {"spec": {
        "command": f"while [ ! -e {gate} ]; do sleep 0.1; done", "gpus": 2}})
    assert sent.status == 201, sent.body
    job_id = sent.json()["id"]
    foreign = cluster.run("sbatch", "--parsable", "--gres=gpu:1", "--job-name=theirs",
                          f"--chdir={daemon.root}", "--output=/dev/null",
                          f"--wrap=while [ ! -e {gate} ]; do sleep 0.1; done")
    assert foreign.returncode == 0, foreign.stderr
    slurm_id = int(foreign.stdout.strip())

    def listing() -> GpuList:
        got = daemon.as_user(alice, "GET", "/v1/gpus")
        assert got.status == 200, got.body
        return GpuList.model_validate(got.json())

    def in_use() -> int:
        rows = daemon.as_user(alice, "GET", "/v1/usage").json()["rows"]
        return sum(r["gpus_in_use"] for r in rows if r["name"] == alice.name)

    try:
        # Slurm may show the job running a moment before the daemon has recorded
        # its Slurm id (sbatch's answer): wait for both.
        gpus = wait_for(lambda: (g := listing()) and sum(x.slurm_job is not None
                                                         for x in g.gpus) == 3
                        and sum(x.job is not None for x in g.gpus) == 2 and g,
                        timeout=60, what="three of the cluster's GPUs to be held, two by nai")
        # /v1/usage: the job's GPUs on Slurm's node are alice's in use, as on one server.
        wait_for(lambda: in_use() == 2, timeout=60, what="alice's 2 GPUs in /v1/usage")
    finally:
        gate.touch()
    assert gpus.cluster == "slurm"
    # The cluster's four GPUs, not the login node's one.
    assert [(g.index, g.node) for g in gpus.gpus] == [(i, "nai-node1") for i in range(4)]
    ours = [g for g in gpus.gpus if g.job is not None]
    assert [(g.job, g.user) for g in ours] == [(job_id, alice.name)] * 2
    theirs = [g for g in gpus.gpus if g.slurm_job == slurm_id]
    assert [(g.job, g.user) for g in theirs] == [(None, "root")]
    assert len({g.slurm_job for g in ours}) == 1 and ours[0].slurm_job != slurm_id
