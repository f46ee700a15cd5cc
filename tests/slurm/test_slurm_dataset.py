"""A job with `dataset: NAME@V` on the real Slurm cluster, as a real non-root unix
user: it reads the dataset nai materialised in its directory (on the state dir the
nodes share), cannot change it, and its outputs and metrics (a line it writes to
metrics.jsonl, and one read from its log by a `metrics:` pattern) come back through
the API as on one server."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import wait_for
from nai_server.testing.slurm_cluster import SlurmCluster
from tests.integration.conftest import Daemon, UnixUser, upload_as

DATA = {"labels.csv": b"id,label\n1,3\n", "train/a.bin": os.urandom(40_000)}
OUTPUT = bytes(range(256)) * 64
# Each attempt prints what it tried and whether the kernel let it.
JOB = """
cd "$NAI_DATASET_DIR" || exit 9
attempt() { if sh -c "$2" 2>/dev/null; then echo "$1 allowed"; else echo "$1 refused"; fi; }
attempt append 'echo x >> labels.csv'
attempt truncate ': > train/a.bin'
attempt chmod 'chmod u+w labels.csv'
attempt delete 'rm -f labels.csv'
attempt create 'echo new > new.txt'
attempt rename 'mv train/a.bin train/b.bin'
sha256sum labels.csv train/a.bin > "$NAI_OUTPUT_DIR/sums"
cp train/a.bin "$NAI_OUTPUT_DIR/copy.bin"
echo '{"step": 1, "loss": 0.25}' >> "$NAI_METRICS_FILE"
echo "user $(id -un) uid $(id -u) slurm ${SLURM_JOB_ID:-none}"
echo "epoch 2 acc 0.75"
"""


def upload_dataset(daemon: Daemon, user: UnixUser, name: str) -> str:
    """The dataset's blobs and tree, sent by its owner (a tree is its sender's), and the
    dataset registered from them; its tree id."""
    tree_id = upload_as(daemon, user, DATA)
    made = daemon.as_user(user, "POST", "/v1/datasets", {"name": name, "tree_id": tree_id})
    assert made.status == 201, made.body
    return tree_id


def test_a_job_reads_its_dataset_on_slurm_and_cannot_change_it(
        cluster: SlurmCluster, daemon_factory: Callable[..., Daemon],
        make_user: Callable[[], UnixUser]) -> None:
    daemon = daemon_factory(gpus=0, launcher="slurm", slurm={
        "conf": str(cluster.conf), "accounting": "jobcomp", "poll_seconds": 0.2})
    daemon.start()
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    tree = upload_dataset(daemon, alice, "digits")
    sent = daemon.as_user(alice, "POST", "/v1/jobs", {"spec": {
        "command": JOB, "gpus": 1, "dataset": "digits@1",
        "metrics": {"patterns": [r"epoch (?P<step>\d+) acc (?P<acc>[\d.]+)"]}}})
    assert sent.status == 201, sent.body
    job_id = sent.json()["id"]

    def info() -> dict[str, Any]:
        return daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}").json()  # type: ignore[no-any-return]

    wait_for(lambda: info()["state"] in TERMINAL_STATES, timeout=60, what="the job to end")
    ended = info()
    log = daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}/logs").body.decode()
    assert ended["state"] == "succeeded", (ended, log, daemon.log())
    assert ended["dataset"] == {"name": "digits", "version": 1, "tree_id": tree}
    assert f"user {alice.name} uid {alice.uid} slurm " in log  # as its owner, not root
    assert "slurm none" not in log  # and by Slurm
    attempts = dict(line.split() for line in log.splitlines()
                    if line.endswith((" allowed", " refused")))
    assert attempts == {k: "refused" for k in ("append", "truncate", "chmod", "delete",
                                              "create", "rename")}, log

    def output(path: str) -> bytes:
        got = daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}/outputs/file?path={path}")
        assert got.status == 200, got.body
        return got.body

    # It read the data as registered, and its outputs come back byte for byte.
    sums = output("sums").decode()
    assert dict(reversed(line.split()) for line in sums.splitlines()) == {
        p: hashlib.sha256(d).hexdigest() for p, d in DATA.items()}
    assert output("copy.bin") == DATA["train/a.bin"]
    # Its metrics: the line it wrote, and the one its pattern found in its log.
    rows = wait_for(lambda: (r := daemon.as_user(
        alice, "GET", f"/v1/jobs/{job_id}/metrics").json()["metrics"]) and
        any("acc" in x for x in r) and r, timeout=30, what="the job's metrics")
    assert {"step": 1, "loss": 0.25} in [{k: r[k] for k in ("step", "loss") if k in r}
                                         for r in rows], rows
    assert any(r.get("acc") == 0.75 and r.get("step") == 2 for r in rows), rows
    # The blobs behind the dataset are untouched.
    for data in DATA.values():
        digest = hashlib.sha256(data).hexdigest()
        blob = daemon.state / "blobs" / "sha256" / digest[:2] / digest[2:]
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest
