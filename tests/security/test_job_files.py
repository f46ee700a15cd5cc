"""A job is an adversary: it may replace any file it can write with a symlink, a FIFO or
a huge sparse file at any moment. Through the real daemon (root) as real unix users,
none of that reaches the daemon's rights, freezes it, or becomes an output."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, UnixUser  # type: ignore[import-not-found]

from nai_server.host import jobfiles
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import wait_for

TERMINAL = TERMINAL_STATES


def submit(daemon: Daemon, user: UnixUser, command: str, **spec: Any) -> int:
    made = daemon.as_user(user, "POST", "/v1/jobs",
                          {"spec": {"command": command, "gpus": 0, **spec}})
    assert made.status == 201, made.json()
    return int(made.json()["id"])


def ended(daemon: Daemon, user: UnixUser, job_id: int) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        info = daemon.as_user(user, "GET", f"/v1/jobs/{job_id}").json()
        return info if info["state"] in TERMINAL else None

    return wait_for(look, what=f"job {job_id} to end")


def registered(daemon: Daemon, make_user: Any, count: int = 1) -> list[UnixUser]:
    users = [make_user() for _ in range(count)]
    for u in users:
        assert daemon.admin("user", "add", u.name).returncode == 0
    return users


SWAPS = r"""
export WRAPPER=$PPID
try() { if sh -c "$2" 2>/dev/null; then echo "$1 done"; else echo "$1 refused"; fi; }
try log-link 'rm -f "$NAI_JOB_DIR/log" && ln -s /etc/shadow "$NAI_JOB_DIR/log"'
try log-rename 'ln -s /etc/shadow "$NAI_JOB_DIR/x" && mv -f "$NAI_JOB_DIR/x" "$NAI_JOB_DIR/log"'
try metrics-link 'rm -f "$NAI_METRICS_FILE" && ln -s "$VICTIM" "$NAI_METRICS_FILE"'
try metrics-fifo 'rm -f "$NAI_METRICS_FILE" && mkfifo "$NAI_METRICS_FILE"'
try output-link 'rm -rf "$NAI_OUTPUT_DIR" && ln -s /etc/ssh "$NAI_OUTPUT_DIR"'
try output-rename 'mv "$NAI_OUTPUT_DIR" "$NAI_JOB_DIR/old"'
try status-write 'echo "exit 0" >> "$NAI_JOB_DIR/run.status"'
echo "status fds: $(ls -l /proc/$WRAPPER/fd | grep -c run.status)"
try status-proc 'for f in /proc/$WRAPPER/fd/*; do
  [ "$(readlink $f)" = "$NAI_JOB_DIR/run.status" ] && echo "exit 0" >> $f && exit 0; done; exit 1'
echo '{"step": 1, "loss": 0.5}' >> "$NAI_METRICS_FILE"
echo mine > "$NAI_OUTPUT_DIR/result.txt"
exit 3
"""


def test_a_job_can_replace_none_of_the_files_the_daemon_reads(
        daemon: Daemon, make_user: Any) -> None:
    alice, bob = registered(daemon, make_user, 2)
    bob_job = submit(daemon, bob, 'echo \'{"bob": "secret"}\' > "$NAI_METRICS_FILE"')
    ended(daemon, bob, bob_job)
    victim = daemon.state / "jobs" / str(bob_job) / "metrics.jsonl"
    job = submit(daemon, alice, SWAPS, env={"VICTIM": str(victim)})
    info = ended(daemon, alice, job)

    log = daemon.as_user(alice, "GET", f"/v1/jobs/{job}/logs").body.decode()
    for attempt in ("log-link", "log-rename", "metrics-link", "metrics-fifo", "output-link",
                    "output-rename", "status-write", "status-proc"):
        assert f"{attempt} refused" in log, log
    assert "root:" not in log and "status fds: 1" in log  # the wrapper holds it open
    # The wrapper's record stands: the job's own exit code, nothing it wrote in its place.
    assert info["state"] == "failed" and info["exit_code"] == 3
    rows = daemon.as_user(alice, "GET", f"/v1/jobs/{job}/metrics").json()["metrics"]
    assert rows == [{"step": 1, "loss": 0.5}]
    outputs = daemon.as_user(alice, "GET", f"/v1/jobs/{job}/outputs").json()
    assert [e["path"] for e in outputs["entries"]] == ["result.txt"]


def held_job(daemon: Daemon, user: UnixUser, name: str) -> tuple[int, Path, Path]:
    """A job that writes output/a.txt, then waits for its gate file."""
    gate = daemon.root / name
    job = submit(daemon, user, f'echo ok > "$NAI_OUTPUT_DIR/a.txt"; '
                               f'while [ ! -e {gate} ]; do sleep 0.05; done')
    output = daemon.state / "jobs" / str(job) / "output"
    wait_for(lambda: (output / "a.txt").exists(), what=f"job {job} to write its output")
    return job, output, gate


def test_outputs_are_read_as_the_jobs_owner(daemon: Daemon, make_user: Any) -> None:
    """What the owner could not read, or does not own, never becomes an output (root
    plants the files: as on a host without protected_hardlinks)."""
    (alice,) = registered(daemon, make_user)
    job, output, gate = held_job(daemon, alice, "gate1")
    planted = output / "planted"
    planted.write_text("root only\n")
    os.chmod(planted, 0o600)
    gate.touch()
    info = ended(daemon, alice, job)
    assert info["state"] == "succeeded" and info["output_tree"] is None
    assert "planted: cannot be read (Permission denied)" in info["message"]

    public = daemon.root / "root-public"
    public.write_text("readable by all, owned by root\n")
    os.chmod(public, 0o644)
    job, output, gate = held_job(daemon, alice, "gate2")
    os.link(public, output / "public")
    gate.touch()
    info = ended(daemon, alice, job)
    assert info["output_tree"] is None
    assert "public: is a hard link to a file its owner does not own" in info["message"]


def test_fifos_and_sparse_outputs_neither_freeze_nor_fill_the_daemon(
        daemon: Daemon, make_user: Any) -> None:
    (alice,) = registered(daemon, make_user)
    job = submit(daemon, alice, 'mkfifo "$NAI_OUTPUT_DIR/pipe"; '
                                'truncate -s 4G "$NAI_OUTPUT_DIR/big.bin"; echo done')
    info = ended(daemon, alice, job)
    assert info["output_tree"] is None
    assert "big.bin: is a sparse file" in info["message"]
    blobs = daemon.state / "blobs" / "sha256"
    stored = sum(f.stat().st_size for f in blobs.rglob("*") if f.is_file())
    assert stored < 1 << 20  # nothing of the 4 GiB was copied
    assert daemon.as_user(alice, "GET", "/v1/version").status == 200
    # A FIFO alone is skipped, and the rest is collected.
    job2 = submit(daemon, alice, 'mkfifo "$NAI_OUTPUT_DIR/pipe"; echo x > "$NAI_OUTPUT_DIR/x"')
    info2 = ended(daemon, alice, job2)
    entries = daemon.as_user(alice, "GET", f"/v1/jobs/{job2}/outputs").json()["entries"]
    assert info2["state"] == "succeeded" and [e["path"] for e in entries] == ["x"]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_job_files_open_only_as_regular_files(tmp_path: Path, kind: str) -> None:
    """Job directories made by older versions belong to their owners: whatever stands
    at a file's name, the daemon opens only a regular file, and never blocks."""
    (tmp_path / "target").write_text("root:secret\n")
    path = tmp_path / "log"
    if kind == "symlink":
        path.symlink_to(tmp_path / "target")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    with pytest.raises(jobfiles.UnsafeJobFile):
        jobfiles.read_range(tmp_path, "log", 0, 100)
    assert jobfiles.read_small(tmp_path, "log") is None
    assert stat.S_ISREG((tmp_path / "target").stat().st_mode)
