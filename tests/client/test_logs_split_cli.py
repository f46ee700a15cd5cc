"""`nai logs` prints as `docker logs` does: the job's stdout on stdout and its stderr on
stderr (`nai logs ID 2>/dev/null` shows the stdout alone), with -f as well; a server that
cannot tell them apart has everything printed on stdout. Through `nai`'s real `main`
against the in-process server, with real job processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nai_server.app.use_cases import UseCases
from nai_server.protocol import TERMINAL_STATES, NotFound
from nai_server.protocol.jobs import LogPiece
from nai_server.testing import tick_until
from nai_tui.cli.log_print import write_piece
from nai_tui.remote.client import ServerClient


@pytest.fixture
def nai(nai_raw: Any) -> Any:
    """The CLI's output as bytes: a log is what the job wrote, byte for byte."""
    return nai_raw


def finished(nai: Any, client: ServerClient, service: UseCases, tmp_path: Path) -> int:
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "run.sh").write_text("echo out1; echo err1 >&2; printf 'out2\\n'; "
                                   "echo 'Error: err2' >&2\n")
    (folder / "nai.yaml").write_text("command: sh run.sh\ngpus: 0\n")
    status, out, _ = nai("submit", str(folder), "--json")
    assert status == 0
    job_id = int(json.loads(out)["id"])
    tick_until(service, lambda: client.job(job_id).state in TERMINAL_STATES,
               what="the job to end")
    return job_id


def test_stdout_and_stderr_go_to_their_own_streams(
        nai: Any, client: ServerClient, service: UseCases, tmp_path: Path) -> None:
    job_id = str(finished(nai, client, service, tmp_path))
    for args in (("logs", job_id), ("logs", job_id, "-f")):
        status, out, err = nai(*args)
        assert status == 0
        assert out == b"out1\nout2\n"
        assert err.startswith(b"err1\nError: err2\n"), err  # -f then notes how it ended


def test_a_server_without_ranges_prints_everything_on_stdout(
        nai: Any, client: ServerClient, service: UseCases, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = finished(nai, client, service, tmp_path)

    def no_route(*_args: Any) -> LogPiece:
        raise NotFound("Not Found")

    monkeypatch.setattr(client, "log_piece", no_route)
    status, out, err = nai("logs", str(job_id))
    assert status == 0 and err == b""
    assert sorted(out.splitlines()) == [b"Error: err2", b"err1", b"out1", b"out2"]


def test_each_part_is_flushed_as_it_comes() -> None:
    class Recorder:
        def __init__(self, log: list[tuple[str, bytes]], name: str) -> None:
            self.log, self.name = log, name

        def write(self, data: bytes) -> int:
            self.log.append((self.name, data))
            return len(data)

        def flush(self) -> None:
            self.log.append((self.name, b"<flush>"))

    log: list[tuple[str, bytes]] = []
    piece = LogPiece(10, b"a\nB\nc\n", 16, ((12, 14),))
    write_piece(piece, Recorder(log, "out"), Recorder(log, "err"))  # type: ignore[arg-type]
    assert log == [("out", b"a\n"), ("out", b"<flush>"), ("err", b"B\n"), ("err", b"<flush>"),
                   ("out", b"c\n"), ("out", b"<flush>")]


def ended(nai: Any, client: ServerClient, service: UseCases, folder: Path,
          command: str) -> int:
    """Submit `command` from `folder` and run it to its end."""
    folder.mkdir()
    status, out, _ = nai("submit", str(folder), "--gpus", "0", "--command", command, "--json")
    assert status == 0
    job_id = int(json.loads(out)["id"])
    tick_until(service, lambda: client.job(job_id).state in TERMINAL_STATES,
               what="the job to end")
    return job_id


# 4,000 lines, stdout and stderr in turn: far more stderr spans than one range reply
# holds (MAX_LOG_SPANS), so the server answers the reads --tail makes with fewer bytes
# than asked.
INTERLEAVED = "i=0; while [ $i -lt 2000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done"


def log_lines(client: ServerClient, job_id: int) -> list[tuple[bytes, bool]]:
    """The log's lines as the server holds them, each with whether it came from stderr
    (the job's two streams reach the log in the order they are read, not written)."""
    marked: list[tuple[int, bool]] = []
    offset = 0
    while (piece := client.log_piece(job_id, offset, 1 << 20)).data:
        marked.extend((b, on_err) for data, on_err in piece.parts() for b in data)
        offset += len(piece.data)
    lines, line = [], bytearray()
    for b, on_err in marked:
        line.append(b)
        if b == ord("\n"):
            lines.append((bytes(line), on_err))
            line.clear()
    if line:
        lines.append((bytes(line), marked[-1][1]))
    return lines


def last_lines(lines: list[tuple[bytes, bool]], n: int) -> tuple[bytes, bytes]:
    """What `nai logs --tail n` prints on stdout and on stderr, from the log's lines."""
    kept = lines[-n:] if n else []
    return (b"".join(x for x, on_err in kept if not on_err),
            b"".join(x for x, on_err in kept if on_err))


def test_tail_counts_lines_of_stdout_and_stderr_together(
        nai: Any, client: ServerClient, service: UseCases, tmp_path: Path) -> None:
    job_id = ended(nai, client, service, tmp_path / "a", INTERLEAVED)
    lines = log_lines(client, job_id)
    assert len(lines) == 4000 and sum(on_err for _, on_err in lines) == 2000
    for n in (1, 3, 300, 3999, 4000, 4001, 100000, 0):
        status, out, err = nai("logs", str(job_id), "--tail", str(n))
        assert status == 0 and (out, err) == last_lines(lines, n), n
    # No newline at the end: the unfinished line counts as the last. (On stderr, which
    # reaches the log through the tagger: what the job wrote before it is in already.)
    job_id = ended(nai, client, service, tmp_path / "b",
                   INTERLEAVED + "; printf 'no newline' >&2")
    lines = log_lines(client, job_id)
    assert lines[-1] == (b"no newline", True)
    for n in (1, 2, 3, 301, 4001, 5000):
        status, out, err = nai("logs", str(job_id), "--tail", str(n))
        assert status == 0 and (out, err) == last_lines(lines, n), n
