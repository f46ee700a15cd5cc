"""A job's stderr is told apart from its stdout: real job processes through the real
launcher, each stderr byte marked where it landed in the log and no stdout byte marked,
the last words of a job marked before it is seen to end, and a job whose tagger cannot
run still runs, untagged."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.host import stderr_marks
from nai_server.host.launchers.local import Handle, LaunchRequest, LocalLauncher
from nai_server.host.output_helpers import Forked, ForkServer
from nai_server.protocol import TERMINAL_STATES
from nai_server.protocol.jobs import LogPiece, parse_spans
from nai_server.testing import AsPeer, make_service, tick_until, wait_for


def unforked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Taggers started on their own (as when the fork server fails): from _SOURCE."""
    def refuse(*_args: object) -> None:
        raise OSError("no fork server here")

    monkeypatch.setattr(ForkServer, "spawn_tagger", refuse)


def launch(tmp_path: Path, command: str, *,
           as_account: bool = False) -> tuple[LocalLauncher, Handle]:
    """The job as this process's account named (as a job of a user's is: its tagger is
    forked), or as the daemon's own (personal mode: a root daemon's is started)."""
    (tmp_path / "code").mkdir(exist_ok=True)
    launcher = LocalLauncher()
    account = {"uid": os.getuid(), "gid": os.getgid()} if as_account else {}
    handle = launcher.start(LaunchRequest(
        job_id=1, job_dir=tmp_path, command=command, env={"PATH": os.environ["PATH"]},
        cwd=tmp_path / "code", tag_stderr=True, **account))
    return launcher, handle


def run(tmp_path: Path, command: str, *,
        forked: bool = False) -> tuple[int | None, LogPiece]:
    launcher, handle = launch(tmp_path, command, as_account=forked)
    assert isinstance(launcher._taggers[handle.pid], Forked) == forked
    wait_for(lambda: launcher.status(tmp_path, handle)[0] != "running", what="the job to end")
    code = launcher.status(tmp_path, handle)[1]
    log = (tmp_path / "log").read_bytes()
    spans, cut = stderr_marks.read_spans(tmp_path, 0, len(log), 1 << 20)
    assert cut is None
    return code, LogPiece(0, log, len(log), tuple(spans))


def lines_by_stream(piece: LogPiece) -> tuple[list[bytes], list[bytes]]:
    out: list[bytes] = []
    err: list[bytes] = []
    for data, from_stderr in piece.parts():
        (err if from_stderr else out).append(data)
    return b"".join(out).splitlines(), b"".join(err).splitlines()


@pytest.mark.parametrize("how", ["forked", "started on its own"])
def test_every_stderr_byte_and_no_stdout_byte_is_marked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how != "forked":
        unforked(monkeypatch)
    code, piece = run(tmp_path, "for i in $(seq 400); do echo out$i; echo err$i >&2; "
                                "printf 'o%s' $i; printf 'e%s\\n' $i >&2; echo; done; exit 3",
                      forked=how == "forked")
    out, err = lines_by_stream(piece)
    assert code == 3
    assert all(re.fullmatch(rb"(out|o)\d+", line) for line in out) and len(out) == 800
    assert sorted(err) == sorted([f"err{i}".encode() for i in range(1, 401)]
                                 + [f"e{i}".encode() for i in range(1, 401)])


def test_the_last_words_are_in_the_log_and_marked_once_the_job_is_seen_to_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read = "data = os.read(pipe, CHUNK)"
    slow = stderr_marks._source().replace(read, f"{read}; __import__('time').sleep(0.1)")
    unforked(monkeypatch)
    monkeypatch.setattr(stderr_marks, "_SOURCE", slow)  # a tagger behind the job
    code, piece = run(tmp_path, "echo starting; head -c 200000 /dev/zero | tr '\\0' x >&2; "
                                "echo >&2; echo 'Error: the very last line' >&2; exit 1")
    out, err = lines_by_stream(piece)
    assert code == 1 and out == [b"starting"]
    assert err == [b"x" * 200000, b"Error: the very last line"]


def test_a_job_may_write_to_dev_stderr(tmp_path: Path) -> None:
    code, piece = run(tmp_path, "echo reopened >/dev/stderr; echo plain")
    assert code == 0 and lines_by_stream(piece) == ([b"plain"], [b"reopened"])


def test_a_child_left_holding_stderr_does_not_keep_the_job_running(tmp_path: Path) -> None:
    launcher, handle = launch(tmp_path, "sleep 60 & echo $! > pid; echo bye >&2")
    try:
        wait_for(lambda: launcher.status(tmp_path, handle)[0] != "running",
                 what="the job to be seen ended, its tagger stopped")
        assert launcher.status(tmp_path, handle) == ("exited", 0)
    finally:
        os.kill(int((tmp_path / "code" / "pid").read_text()), 9)
    assert b"bye" in (tmp_path / "log").read_bytes()


def test_a_job_whose_tagger_cannot_run_runs_untagged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unforked(monkeypatch)
    monkeypatch.setattr(stderr_marks, "_SOURCE", "raise SystemExit(1)")
    code, piece = run(tmp_path, "echo out; echo err >&2")
    assert code == 0 and piece.data == b"out\nerr\n" and piece.stderr == ()


def test_the_log_range_reply_marks_stderr_through_the_daemon(tmp_path: Path) -> None:
    service = make_service(tmp_path / "state")
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as api:
        job = api.post("/v1/jobs", json={"spec": {
            "command": "echo hello; echo 'Traceback: boom' >&2; exit 2", "gpus": 1}})
        job_id = job.json()["id"]
        tick_until(service, lambda: api.get(f"/v1/jobs/{job_id}").json()["state"]
                   in TERMINAL_STATES, what="the job to end")
        reply = api.get(f"/v1/jobs/{job_id}/logs/range", params={"offset": 6})
        assert reply.content == b"Traceback: boom\n"
        assert parse_spans(6, len(reply.content), reply.headers["X-Log-Stderr"]) == ((6, 22),)
        plain = api.get(f"/v1/jobs/{job_id}/logs/range", params={"length": 6})
        assert plain.content == b"hello\n" and "X-Log-Stderr" not in plain.headers
    service.close()


def test_a_cancelled_job_says_its_last_words_on_stderr(tmp_path: Path) -> None:
    # A cancel signals the whole job, its tagger with it: a tagger that died of the
    # SIGTERM left the job's trap writing to a pipe nobody read (SIGPIPE, exit 141).
    service = make_service(tmp_path / "state")
    ready = tmp_path / "ready"
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as api:
        job_id = api.post("/v1/jobs", json={"spec": {
            "command": f"trap 'sleep 0.05; echo stopping, saving >&2; exit 3' TERM; "
                       f"touch {ready}; "
                       f"while :; do sleep 0.02; done", "gpus": 1}}).json()["id"]
        service.tick()
        wait_for(ready.exists, what="the job to set its trap")
        assert api.delete(f"/v1/jobs/{job_id}").status_code == 200
        info = tick_until(service, lambda: (i := api.get(f"/v1/jobs/{job_id}").json())
                          ["state"] in TERMINAL_STATES and i, what="the job to end")
        assert (info["state"], info["exit_code"]) == ("cancelled", 3)
        reply = api.get(f"/v1/jobs/{job_id}/logs/range")
        assert b"stopping, saving\n" in reply.content
        start = reply.content.index(b"stopping")
        spans = parse_spans(0, len(reply.content), reply.headers["X-Log-Stderr"])
        assert any(a <= start and start + 17 <= b for a, b in spans), spans
    service.close()


def test_the_tagger_outlives_a_daemon_restart_like_the_job(tmp_path: Path) -> None:
    state, gate = tmp_path / "state", tmp_path / "go"
    first = make_service(state)
    with TestClient(AsPeer(create_app(first)), base_url="http://nai") as api:
        job_id = api.post("/v1/jobs", json={"spec": {
            "command": f"echo before >&2; while [ ! -e {gate} ]; do sleep 0.02; done; "
                       "echo out; echo 'Error: after the restart' >&2; exit 5",
            "gpus": 1}}).json()["id"]
        first.tick()
    first.close()  # the daemon goes; the job and its tagger stay
    gate.touch()
    second = make_service(state)
    with TestClient(AsPeer(create_app(second)), base_url="http://nai") as api:
        tick_until(second, lambda: api.get(f"/v1/jobs/{job_id}").json()["state"]
                   in TERMINAL_STATES, what="the job to end")
        done = api.get(f"/v1/jobs/{job_id}").json()
        assert (done["state"], done["exit_code"]) == ("failed", 5)
        assert "leftover" not in (done["message"] or "")
        reply = api.get(f"/v1/jobs/{job_id}/logs/range")
        got = LogPiece(0, reply.content, len(reply.content),
                       parse_spans(0, len(reply.content), reply.headers["X-Log-Stderr"]))
        assert lines_by_stream(got) == ([b"out"], [b"before", b"Error: after the restart"])
    second.close()
