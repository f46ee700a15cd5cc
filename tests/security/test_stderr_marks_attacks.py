"""The marks of a job's stderr (log.stderr) are written by its owner's tagger, so the job
may write anything there: through the real daemon (root) as real unix users, garbage, a
4 GiB sparse file, or (in a directory of an older version) a FIFO or a link in their
place neither freeze the daemon nor reach past the log; and a job that kills its own
tagger loses its stderr, never its record."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from conftest import Daemon, UnixUser  # type: ignore[import-not-found]

from nai_server.host.stderr_marks import MARKS_FILE
from nai_server.protocol import TERMINAL_STATES
from nai_server.protocol.jobs import MAX_LOG_SPANS, LogPiece, parse_spans
from nai_server.testing import wait_for


def registered(daemon: Daemon, make_user: Any) -> UnixUser:
    user = make_user()
    assert daemon.admin("user", "add", user.name).returncode == 0
    return user


def submit(daemon: Daemon, user: UnixUser, command: str) -> int:
    made = daemon.as_user(user, "POST", "/v1/jobs", {"spec": {"command": command, "gpus": 0}})
    assert made.status == 201, made.json()
    return int(made.json()["id"])


def ended(daemon: Daemon, user: UnixUser, job_id: int) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        info = daemon.as_user(user, "GET", f"/v1/jobs/{job_id}").json()
        return info if info["state"] in TERMINAL_STATES else None

    return wait_for(look, what=f"job {job_id} to end")


def piece(daemon: Daemon, user: UnixUser, job_id: int, offset: int = 0) -> LogPiece:
    reply = daemon.as_user(user, "GET", f"/v1/jobs/{job_id}/logs/range?offset={offset}")
    assert reply.status == 200, reply.body
    spans = reply.headers.get("x-log-stderr", "")
    # The reply as sent: every span must lie inside the bytes returned.
    for word in filter(None, spans.split(",")):
        start, end = (int(x) for x in word.split("-"))
        assert 0 <= start < end <= len(reply.body), spans
    assert len(spans.split(",")) <= MAX_LOG_SPANS
    return LogPiece(offset, reply.body, int(reply.headers["x-log-size"]),
                    parse_spans(offset, len(reply.body), spans))


def streams(p: LogPiece) -> tuple[bytes, bytes]:
    parts = p.parts()
    return (b"".join(d for d, e in parts if not e), b"".join(d for d, e in parts if e))


def test_stderr_is_told_apart_for_a_real_user_who_may_reopen_dev_stderr(
        daemon: Daemon, make_user: Any) -> None:
    alice = registered(daemon, make_user)
    job = submit(daemon, alice, "echo out1; echo err1 >&2; echo err2 >/dev/stderr; "
                                "pgrep -x -u $(id -u) nai-stderr-tag >/dev/null && "
                                "echo out2; ls -l /proc/self/fd/2 >&2; exit 4")
    info = ended(daemon, alice, job)
    assert info["state"] == "failed" and info["exit_code"] == 4
    out, err = streams(piece(daemon, alice, job))
    assert out == b"out1\nout2\n"  # out2: its tagger runs as alice, not as root
    assert err.startswith(b"err1\nerr2\n") and b"pipe:" in err, err


GARBAGE = r"""
marks="$NAI_JOB_DIR/log.stderr"
echo visible
# Records past the log, backwards, huge, and a torn one; then a 4 GiB hole.
printf '\377\377\377\377\377\377\377\177\377\377\377\377\377\377\377\377' >> "$marks"
printf '\050\000\000\000\000\000\000\000\003\000\000\000\000\000\000\000' >> "$marks"
printf '\000\000\000\000\000\000\000\000\000\020\000\000\000\000\000\000' >> "$marks"
printf 'torn' >> "$marks"
truncate -s 4G "$marks"
printf '\000\000\000\000\000\000\000\000\377\377\377\377\377\377\377\377' >> "$marks"
echo still-visible
"""


def test_garbage_and_a_sparse_marks_file_reach_nothing_past_the_log(
        daemon: Daemon, make_user: Any) -> None:
    alice = registered(daemon, make_user)
    job = submit(daemon, alice, GARBAGE)
    assert ended(daemon, alice, job)["state"] == "succeeded"
    assert os.stat(daemon.state / "jobs" / str(job) / MARKS_FILE).st_size > 4 << 30
    for offset in (0, 3):
        got = piece(daemon, alice, job, offset)  # spans checked inside the reply
        assert got.data == b"visible\nstill-visible\n"[offset:]
    assert daemon.as_user(alice, "GET", "/v1/version").status == 200


def held_job(daemon: Daemon, user: UnixUser, name: str) -> tuple[int, Path, Path]:
    gate = daemon.root / name
    job = submit(daemon, user, f"echo hi; echo oops >&2; "
                               f"while [ ! -e {gate} ]; do sleep 0.05; done")
    job_dir = daemon.state / "jobs" / str(job)
    wait_for(lambda: b"oops" in (job_dir / "log").read_bytes(), what="the job to write")
    return job, job_dir, gate


def test_a_fifo_or_a_link_in_place_of_the_marks_freezes_nothing(
        daemon: Daemon, make_user: Any) -> None:
    """Directories of older versions were their owners': whatever stands at the name,
    the daemon answers at once, with no stderr marked (root plants it here)."""
    alice = registered(daemon, make_user)
    job, job_dir, gate = held_job(daemon, alice, "gate-fifo")
    marks = job_dir / MARKS_FILE
    try:
        assert streams(piece(daemon, alice, job)) == (b"hi\n", b"oops\n")
        marks.unlink()
        os.mkfifo(marks)
        assert streams(piece(daemon, alice, job)) == (b"hi\noops\n", b"")
        marks.unlink()
        secret = daemon.root / "root-marks"
        secret.write_bytes(b"\0" * 8 + b"\x08" + b"\0" * 7)  # "its first 8 bytes: stderr"
        os.chmod(secret, 0o600)
        marks.symlink_to(secret)
        assert streams(piece(daemon, alice, job)) == (b"hi\noops\n", b"")
    finally:
        gate.touch()
    assert ended(daemon, alice, job)["state"] == "succeeded"


def test_a_job_that_kills_its_tagger_loses_its_stderr_not_its_record(
        daemon: Daemon, make_user: Any) -> None:
    alice = registered(daemon, make_user)
    job = submit(daemon, alice, "echo before >&2; "
                                "pkill -KILL -u $(id -u) -x nai-stderr-tag; "
                                "while pgrep -u $(id -u) -x nai-stderr-tag; do :; done; "
                                "echo out; echo after >&2; echo never")
    info = ended(daemon, alice, job)
    assert info["state"] == "failed" and info["exit_code"] == 141  # SIGPIPE, as documented
    out, err = streams(piece(daemon, alice, job))
    assert out == b"out\n" and err == b"before\n"
    again = submit(daemon, alice, "echo fine >&2")
    assert ended(daemon, alice, again)["state"] == "succeeded"
    assert streams(piece(daemon, alice, again)) == (b"", b"fine\n")
