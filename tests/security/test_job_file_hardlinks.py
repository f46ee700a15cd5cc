"""A hard link is a regular file: in a job directory made by an older version (owned by
the job's owner), a name may be a second link to root's or another user's file, planted
where `protected_hardlinks` is off. Through the real daemon (root) as real unix users,
such a file is neither read out, appended to, nor given to the job's owner; and a link
the owner makes to their own log from elsewhere leaves the log readable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from conftest import Daemon, UnixUser  # type: ignore[import-not-found]

from nai_server.core.job import Job
from nai_server.host import jobdir, jobfiles
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import wait_for

SECRET = "root:$6$secret-hash:19000:0:99999:7:::\n"


def submit(daemon: Daemon, user: UnixUser, command: str) -> int:
    made = daemon.as_user(user, "POST", "/v1/jobs",
                          {"spec": {"command": command, "gpus": 0}})
    assert made.status == 201, made.json()
    return int(made.json()["id"])


def ended(daemon: Daemon, user: UnixUser, job_id: int) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        info = daemon.as_user(user, "GET", f"/v1/jobs/{job_id}").json()
        return info if info["state"] in TERMINAL_STATES else None

    return wait_for(look, what=f"job {job_id} to end")


def as_older_version(job_dir: Path, user: UnixUser) -> None:
    """Give a job directory to the job's owner, as versions before the daemon kept it."""
    os.chown(job_dir, user.uid, user.gid)
    os.chmod(job_dir, 0o755)


def root_secret(where: Path) -> Path:
    secret = where / "shadow-like"
    secret.write_text(SECRET)
    os.chmod(secret, 0o600)
    return secret


def test_a_planted_hard_link_is_not_read_out_as_the_log(
        daemon: Daemon, make_user: Any) -> None:
    alice, bob = make_user(), make_user()
    for u in (alice, bob):
        assert daemon.admin("user", "add", u.name).returncode == 0
    job = submit(daemon, alice, "echo mine")
    assert ended(daemon, alice, job)["state"] == "succeeded"
    job_dir = daemon.state / "jobs" / str(job)
    as_older_version(job_dir, alice)
    bobs = bob.home / "private.txt"
    bobs.write_text("bob's diary\n")
    os.chown(bobs, bob.uid, bob.gid)
    os.chmod(bobs, 0o600)
    for target, leaked in ((root_secret(daemon.root), "secret-hash"), (bobs, "diary")):
        # What alice's `ln TARGET jobs/N/log` does with protected_hardlinks off.
        (job_dir / "log").unlink()
        os.link(target, job_dir / "log")
        for path in (f"/v1/jobs/{job}/logs", f"/v1/jobs/{job}/logs/range?offset=0&length=4096",
                     f"/v1/jobs/{job}/logs/search?q={leaked}"):
            answer = daemon.as_user(alice, "GET", path)
            assert leaked not in answer.body.decode(errors="replace"), path
            assert answer.status == 409, (path, answer.status)
    # Her own file linked there is hers to read.
    own = alice.home / "notes.txt"
    own.write_text("alice's own notes\n")
    os.chown(own, alice.uid, alice.gid)
    (job_dir / "log").unlink()
    os.link(own, job_dir / "log")
    answer = daemon.as_user(alice, "GET", f"/v1/jobs/{job}/logs")
    assert answer.status == 200 and "alice's own notes" in answer.body.decode()


def test_a_link_to_her_own_log_leaves_it_readable(daemon: Daemon, make_user: Any) -> None:
    """New job directories are the daemon's: a second link the job makes to its log (it
    may: the log is its owner's) raises the link count and changes nothing."""
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    job = submit(daemon, alice, 'echo "line one"; ln "$NAI_JOB_DIR/log" "$NAI_OUTPUT_DIR/log" '
                                '&& echo linked')
    assert ended(daemon, alice, job)["state"] == "succeeded"
    assert os.stat(daemon.state / "jobs" / str(job) / "log").st_nlink == 2
    answer = daemon.as_user(alice, "GET", f"/v1/jobs/{job}/logs")
    assert answer.status == 200 and "linked" in answer.body.decode()


def test_root_appends_to_no_planted_metrics_file(make_user: Any, tmp_path: Path) -> None:
    alice = make_user()
    secret = root_secret(tmp_path)
    job_dir = tmp_path / "jobs" / "7"
    job_dir.mkdir(parents=True)
    as_older_version(job_dir, alice)
    os.link(secret, job_dir / "metrics.jsonl")
    try:
        jobfiles.append(job_dir, "metrics.jsonl", b'{"loss": 1}\n')
    except jobfiles.UnsafeJobFile:
        pass
    assert secret.read_text() == SECRET


def test_a_rerun_gives_no_planted_file_to_the_owner(make_user: Any, tmp_path: Path) -> None:
    """A job that runs again (preempted, requeued) in a directory of an older version:
    its log and metrics.jsonl are opened as root and given to the job's owner, so a
    planted link there would give root's file away."""
    alice = make_user()
    secret = root_secret(tmp_path)
    job_dir = tmp_path / "jobs" / "8"
    job_dir.mkdir(parents=True)
    as_older_version(job_dir, alice)
    for name in ("log", "metrics.jsonl"):
        os.link(secret, job_dir / name)
    job = Job.from_doc({"id": 8, "user": alice.name, "state": "queued", "runs": [[0, 1, 0]],
                        "spec": {"command": "true", "gpus": 0}, "submitted_at": 0.0})
    jobdir.make(job, job_dir, None, alice.uid, alice.gid, personal=False)  # type: ignore[arg-type]
    assert os.stat(secret).st_uid == 0 and secret.read_text() == SECRET
    assert os.stat(secret).st_nlink == 1  # both links went, the file stayed
    for name in ("log", "metrics.jsonl"):
        assert not (job_dir / name).exists() or (job_dir / name).read_text() == ""
