"""A root daemon reads a job's outputs only as the job's owner: when the owner has no
unix account any more (removed while the job ran, or the account service did not
answer), nothing is read, rather than reading the owner's output/ as root (where a
hard link to a root-owned file would make it an output). The fork server that starts
the readers refuses to start one as root unless it serves a personal daemon."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon  # type: ignore[import-not-found]

from nai_server.core.trees import UNLIMITED
from nai_server.host import collection, outputs, unix
from nai_server.host.output_helpers import AsRoot, ForkServer
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import wait_for

ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="reading as another user needs root")
NOBODY = outputs.RunAs(65534, 65534, ())


@pytest.fixture
def output() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        out = Path(tmp) / "output"
        out.mkdir(mode=0o755)
        (out / "a.txt").write_text("hi")
        yield out


@ROOT
def test_no_account_means_no_reader_as_root() -> None:
    with pytest.raises(unix.NoAccount, match="no unix account 'nai-no-such-user'"):
        collection.run_as("nai-no-such-user", personal=False)
    assert collection.run_as("nai-no-such-user", personal=True) == outputs.RunAs()


@ROOT
def test_a_root_fork_server_starts_no_reader_as_root(output: Path, tmp_path: Path) -> None:
    from nai_server.store.blobs import BlobStore

    forks = ForkServer()
    try:
        blobs = BlobStore(tmp_path / "blobs")
        # Not as root, and no helper of its own started instead (it would be root too).
        with pytest.raises(AsRoot):
            outputs.collect(blobs, output, UNLIMITED, outputs.RunAs(), 30, forks=forks)
        assert outputs.collect(blobs, output, UNLIMITED, NOBODY, 30, forks=forks)
        # The server itself refuses too, whatever the daemon's side lets through.
        forks.as_daemon = True
        with pytest.raises(OSError, match="refused"):
            forks.spawn(None, None, (), output, 100)
    finally:
        forks.close()


def _job(daemon: Daemon, job_id: int) -> dict[str, Any] | None:
    job: dict[str, Any] = daemon.client().get(f"/v1/jobs/{job_id}").json()
    return job if job["state"] in TERMINAL_STATES else None


def test_outputs_of_a_removed_account_are_not_read_as_root(
        daemon: Daemon, make_user: Any) -> None:
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    made = daemon.as_user(alice, "POST", "/v1/jobs", {"spec": {"gpus": 0, "command": (
        'echo mine > "$NAI_OUTPUT_DIR/mine"; touch "$NAI_OUTPUT_DIR/ready"; '
        'while [ ! -e "$NAI_OUTPUT_DIR/go" ]; do sleep 0.05; done')}})
    assert made.status == 201, made.json()
    job_id = made.json()["id"]
    out = daemon.state / "jobs" / str(job_id) / "output"
    wait_for(lambda: (out / "ready").exists(), what="the job to run")
    # What a hard link to /etc/shadow would be: a root-owned file alice may not read.
    (out / "shadow").write_text("root's secret")
    os.chmod(out / "shadow", 0o600)
    subprocess.run(["userdel", "-f", alice.name], check=True, capture_output=True)
    try:
        (out / "go").touch()
        job = wait_for(lambda: _job(daemon, job_id), what="the job's end")
    finally:
        shutil.rmtree(alice.home, ignore_errors=True)
    assert job.get("output_tree") is None, job
    assert "no unix account" in (job.get("message") or ""), job
    assert (out / "mine").read_text() == "mine\n"  # left in the job's folder


@ROOT
def test_event_files_of_an_owner_without_account_are_not_read(tmp_path: Path) -> None:
    from nai_server.core.job import Job
    from nai_server.core.spec import spec_from_dict
    from nai_server.core.states import JobState
    from nai_server.host.metrics_ingest import MetricsIngest

    job = Job(id=1, user="nai-no-such-user", state=JobState.RUNNING, submitted_at=0.0,
              spec=spec_from_dict({"command": "x", "metrics": {"tensorboard": "runs"}}))
    (tmp_path / "jobs" / "1" / "output" / "runs").mkdir(parents=True)
    ingest = MetricsIngest(tmp_path / "jobs",
                           run_as=lambda job: collection.run_as(job.user, False))
    assert "no unix account" in ingest.read_events(job, {}).get("error", "")
