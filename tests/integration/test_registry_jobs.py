"""A job of a real non-root unix user, under the real multi-user daemon, cannot change
the dataset it reads: not its files, not its directories' entries, not the blobs
behind them."""

from __future__ import annotations

import hashlib
import os
import stat

from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]
from test_registry_access import Actor, upload_tree  # type: ignore[import-not-found]

pytestmark = [needs_root]

DATA = {"labels.csv": b"id,label\n1,3\n", "train/a.bin": os.urandom(50_000)}
# Each attempt prints what it tried and whether the kernel let it.
ATTEMPTS = """
cd "$NAI_DATASET_DIR" || exit 9
attempt() { if sh -c "$2" 2>/dev/null; then echo "$1 allowed"; else echo "$1 refused"; fi; }
attempt append 'echo x >> labels.csv'
attempt truncate ': > train/a.bin'
attempt chmod 'chmod u+w labels.csv'
attempt delete 'rm -f labels.csv'
attempt create 'echo new > new.txt'
attempt mkdir 'mkdir more'
attempt rename 'mv train/a.bin train/b.bin'
attempt delete-dir 'rm -rf train'
sha256sum labels.csv train/a.bin > "$NAI_OUTPUT_DIR/sums"
"""


def test_a_job_cannot_change_its_dataset(daemon: Daemon, make_user) -> None:
    user = make_user()
    with daemon.client() as root:
        assert root.post("/v1/users", json={"name": user.name}).status_code == 201
    sender = Actor(daemon, user)  # the tree must be the user's own to register it
    tree = upload_tree(daemon, DATA, sender)
    sender.http.close()
    made = daemon.as_user(user, "POST", "/v1/datasets", {"name": "mine", "tree_id": tree})
    assert made.status == 201, made.json()
    job = daemon.as_user(user, "POST", "/v1/jobs", {"spec": {
        "command": ATTEMPTS,
        "gpus": 0, "dataset": "mine"}})
    assert job.status == 201, job.json()
    job_id = job.json()["id"]
    with daemon.client() as root:
        def ended() -> dict | None:
            info = root.get(f"/v1/jobs/{job_id}").json()
            return info if info["state"] in ("succeeded", "failed", "lost") else None

        info = wait_for(ended, what="the job to end")
        log = root.get(f"/v1/jobs/{job_id}/logs").text
        assert info["state"] == "succeeded", (info, log, daemon.log())
        assert info["dataset"] == {"name": "mine", "version": 1, "tree_id": tree}
        sums = root.get(f"/v1/jobs/{job_id}/outputs/file", params={"path": "sums"}).text
    lines = log.split()
    results = dict(zip(lines[0::2], lines[1::2], strict=False))
    assert results == {k: "refused" for k in ("append", "truncate", "chmod", "delete",
                                             "create", "mkdir", "rename", "delete-dir")}, log
    # The job read the data as it is, and the blobs behind it are unchanged.
    assert dict(reversed(line.split()) for line in sums.splitlines()) == {
        p: hashlib.sha256(d).hexdigest() for p, d in DATA.items()}
    for data in DATA.values():
        digest = hashlib.sha256(data).hexdigest()
        blob = daemon.state / "blobs" / "sha256" / digest[:2] / digest[2:]
        st = blob.stat()
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o444)
    mount = daemon.state / "jobs" / str(job_id) / "dataset"
    for d in (mount, mount / "train"):
        st = d.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o555)
    job_dir = daemon.state / "jobs" / str(job_id)
    assert job_dir.stat().st_uid == 0  # the daemon's: the job cannot rename the mount away
    assert (job_dir / "code").stat().st_uid == user.uid
