"""What a new user meets first in the batch CLI (the new-user review): a job that saved
nothing, a followed log that ends mid-line, the end of a long log, cancelling several
jobs. Through `nai`'s real `main` against the in-process server, with real jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nai_server.app.use_cases import UseCases
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import tick_until
from nai_tui.remote.client import ServerClient


def _ended(nai: Any, client: ServerClient, service: UseCases, folder: Path,
           command: str) -> int:
    """Submit `command` from `folder` (made if need be) and run it to its end."""
    folder.mkdir(exist_ok=True)
    status, out, err = nai("submit", str(folder), "--gpus", "0", "--command", command, "--json")
    assert status == 0, err
    job_id = int(json.loads(out)["id"])
    tick_until(service, lambda: client.job(job_id).state in TERMINAL_STATES,
               what="the job to end")
    return job_id


def test_pulling_a_job_that_saved_nothing_says_where_outputs_go(
        nai: Any, client: ServerClient, service: UseCases, tmp_path: Path) -> None:
    # An unmodified training script: checkpoints in its working folder, not $NAI_OUTPUT_DIR.
    job_id = _ended(nai, client, service, tmp_path / "job",
                    "mkdir -p checkpoints && echo w > checkpoints/ckpt_1.pt")
    status, out, err = nai("pull", str(job_id))
    # stdout as for any pull: the folder, made even empty (scripts `ls "$(nai pull 7)"`)
    dest = tmp_path / "nai-outputs" / str(job_id)
    assert status == 0 and out == f"{dest}\n"
    assert f"job {job_id} saved no outputs (succeeded), so {dest} is empty" in err
    assert "$NAI_OUTPUT_DIR" in err and "docs/job-spec.md" in err
    assert "0 file(s) downloaded" not in err  # read as checkpoints lost on the way
    assert dest.is_dir() and not any(dest.iterdir())
    status, out, err = nai("pull", str(job_id), "--json")
    body = json.loads(out)
    assert status == 0 and body["downloaded"] == 0 and body["empty"] is True
    assert body["to"] == str(dest)
    failed = _ended(nai, client, service, tmp_path / "job", "exit 2")
    here = tmp_path / "here"
    status, out, err = nai("pull", str(failed), "--to", str(here), "--json")
    assert status == 0 and "saved no outputs (failed)" in err
    assert json.loads(out)["to"] == str(here) and here.is_dir()
    done = _ended(nai, client, service, tmp_path / "job", "echo w > $NAI_OUTPUT_DIR/w.pt")
    status, out, err = nai("pull", str(done), "--json")
    assert status == 0 and json.loads(out)["empty"] is False and "1 file(s)" in err


def test_logs_tail_reads_only_the_end_of_a_long_log(
        nai: Any, client: ServerClient, service: UseCases, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = str(_ended(nai, client, service, tmp_path / "job",
                        "seq 1 300000; printf 'no newline' >&2"))  # a 2 MB log
    read: list[int] = []
    for name in ("log_range", "log_piece"):
        real = getattr(client, name)

        def counted(*args: Any, _real: Any = real) -> Any:
            answer = _real(*args)
            read.append(len(answer.data if hasattr(answer, "data") else answer[0]))
            return answer

        monkeypatch.setattr(client, name, counted)
    status, out, err = nai("logs", job_id, "--tail", "3")
    assert status == 0 and out == "299999\n300000\n" and err == "no newline", (out, err)
    assert 0 < sum(read) <= 128 * 1024  # the end, not the 2 MB
    status, out, err = nai("logs", job_id, "-n", "1", "-f")
    assert status == 0 and out == "" and err.startswith("no newline\n"), err
    status, out, _ = nai("logs", job_id, "--tail", "0")
    assert status == 0 and out == ""
    read.clear()
    status, out, _ = nai("logs", job_id, "--tail", "400000")  # more than it has: all
    assert status == 0 and out.startswith("1\n2\n") and out.endswith("\n300000\n")
    assert len(read) <= 12  # reads that grow as it goes back, not one per 64 KiB
    status, _, err = nai("logs", job_id, "--tail", "-2")
    assert status == 2 and "a whole number from 0" in err


def test_logs_of_a_job_not_started_yet_says_so(nai: Any, tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    status, out, _ = nai("submit", str(tmp_path / "job"), "--gpus", "0", "--command", "true")
    assert status == 0  # nothing ticks the in-process server: it stays queued
    job_id = out.strip()
    status, out, err = nai("logs", job_id)
    assert status == 0 and out == ""
    assert f"job {job_id} has not started yet (queued" in err
    assert "use --follow to wait for its output" in err


def test_cancel_takes_ids_and_ranges_and_an_ended_job_is_no_error(
        nai: Any, tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    for _ in range(3):  # nothing ticks the in-process server: they stay queued
        assert nai("submit", str(tmp_path / "job"), "--gpus", "0", "--command", "true")[0] == 0
    status, out, err = nai("cancel", "1-2", "3", "2")
    assert status == 0, err
    assert out.split() == ["1", "2", "3"]  # each once
    assert err.count("cancelled") == 3
    status, out, err = nai("cancel", "1-3", "--json")
    assert status == 0, err
    assert [j["state"] for j in json.loads(out)] == ["cancelled"] * 3
    assert "job 2 already ended (cancelled)" in err and "nai:" not in err
    status, out, err = nai("cancel", "3", "999")  # one ended, one not there: not found
    assert status == 3 and "no job 999" in err and "job 3 already ended" in err
    status, _, err = nai("cancel", "1-20000")
    assert status == 2 and "names 20,000 jobs" in err and "smaller ranges" in err
    status, _, err = nai("cancel", "5-3")
    assert status == 2 and "e.g. 3-5" in err
    status, _, err = nai("cancel", "0-3")
    assert status == 2 and "start at 1" in err


@pytest.mark.parametrize(("args", "usage", "hint"), [
    (["submit", "--folow", "."], "usage: nai submit ", "--folow: did you mean --follow?"),
    (["logs", "2", "--tial", "3"], "usage: nai logs ", "--tial: did you mean --tail?"),
    (["server", "add", "lab", "local", "--defualt"], "usage: nai server add ",
     "--defualt: did you mean --default?"),
    (["jobs", "stray"], "usage: nai jobs ", "unrecognized arguments: stray (`nai jobs --help`"),
    # given to `nai` itself, before the command: `nai`'s usage, not the command's
    (["--bogus", "jobs"], "usage: nai [", "unrecognized arguments: --bogus (`nai --help`"),
    (["-s", "jobs", "--bogus", "jobs"], "usage: nai [", "--bogus (`nai --help`"),
    (["server", "--defualt", "add", "lab", "local"], "usage: nai server [",
     "--defualt (`nai server --help`"),
])
def test_a_mistyped_option_gets_its_commands_usage_and_the_nearest_option(
        nai: Any, args: list[str], usage: str, hint: str) -> None:
    status, out, err = nai(*args)
    assert status == 2 and out == ""
    assert err.startswith(usage) and hint in err, err
