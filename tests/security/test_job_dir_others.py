"""Another user cannot read what a job reads or writes: its dataset (a view shared by its
owner's jobs, host/views), its code, its log or its outputs, through the job's
directory or the views folder, knowing the job's id and the dataset's tree id; real
non-root unix users under the real multi-user daemon."""

from __future__ import annotations

import os
import subprocess

from tests.integration.conftest import Daemon, UnixUser, needs_root, upload_as, wait_for

pytestmark = [needs_root]

SECRET = b"the owner's secret\n"


def _as(user: UnixUser, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, user=user.uid,
                          group=user.gid, extra_groups=[])


def test_another_user_reads_nothing_of_a_job(daemon: Daemon, make_user) -> None:
    owner, other = make_user(), make_user()
    for user in (owner, other):
        assert daemon.admin("user", "add", user.name).returncode == 0
    data = upload_as(daemon, owner, {"secret.txt": SECRET, "dir/more.txt": SECRET})
    code = upload_as(daemon, owner, {"train.py": SECRET + b"print(1)\n"})
    made = daemon.as_user(owner, "POST", "/v1/datasets", {"name": "private", "tree_id": data})
    assert made.status == 201, made.json()
    job = daemon.as_user(owner, "POST", "/v1/jobs", {"spec": {
        "command": 'cat "$NAI_DATASET_DIR/secret.txt"; cp train.py "$NAI_OUTPUT_DIR/"; '
                   'readlink "$NAI_DATASET_DIR" > "$NAI_OUTPUT_DIR/where"; sleep 600',
        "gpus": 0, "dataset": "private"}, "code_tree": code})
    assert job.status == 201, job.json()
    job_id = job.json()["id"]
    job_dir = daemon.state / "jobs" / str(job_id)
    wait_for(lambda: (job_dir / "output" / "where").exists()
             and (job_dir / "output" / "where").stat().st_size, what="the job to run")
    view = (job_dir / "output" / "where").read_text().strip()
    leaks = []
    try:
        for path in (job_dir / "dataset" / "secret.txt", job_dir / "code" / "train.py",
                     job_dir / "output" / "train.py", job_dir / "log",
                     daemon.state / "views" / owner.name / data / "secret.txt"):
            got = _as(other, "cat", str(path))
            if got.returncode == 0 or SECRET.decode() in got.stdout:
                leaks.append(("cat", str(path)))
        for folder in (job_dir, job_dir / "dataset", daemon.state / "views",
                       daemon.state / "views" / owner.name):
            got = _as(other, "ls", str(folder))
            if got.returncode == 0:
                leaks.append(("ls", str(folder)))
        got = _as(other, "cat", os.path.join(view, "secret.txt"))  # a view's path leaked
        if got.returncode == 0:
            leaks.append(("cat", view))
        assert leaks == [], "\n".join(map(str, leaks))
        # The owner's own job reads it (the view is theirs to reach).
        assert _as(owner, "cat", os.path.join(view, "secret.txt")).stdout == SECRET.decode()
    finally:
        with daemon.client() as root:
            root.delete(f"/v1/jobs/{job_id}")
