"""`nai show` lists every limit a job runs under, its time limit too, and a job that
timed out says which limit it reached."""

from __future__ import annotations

import argparse

import pytest

from nai_tui.cli import commands
from nai_tui.testing import FakeServerClient


def _show(client: FakeServerClient, job_id: int, capsys: pytest.CaptureFixture[str]) -> str:
    assert commands.cmd_show(argparse.Namespace(id=job_id, json=False), client) == 0
    return capsys.readouterr().out


def test_show_lists_the_time_limit_and_says_a_timed_out_job_reached_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeServerClient()
    spec = {"time_limit": 5400, "memory": 1 << 30, "cpus": 1}
    running = client.add_job("r", state="running", spec=spec)
    out = _show(client, running.id, capsys)
    assert "limits:    time 1h30m, memory 1.0 GiB, 1 cpus" in out
    assert "note:" not in out

    ended = client.add_job("t", state="timed_out", spec=spec, message="outputs not collected: x")
    out = _show(client, ended.id, capsys)
    assert "note:      stopped: it reached its time limit of 1h30m; outputs not collected: x" \
        in out


def test_show_without_a_time_limit_says_nothing_of_one(
        capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeServerClient()
    job = client.add_job("t", state="timed_out", spec={"time_limit": None, "cpus": 2})
    out = _show(client, job.id, capsys)
    assert "limits:    2 cpus" in out and "time limit" not in out


def test_show_gives_the_last_lines_of_a_failed_jobs_log_made_safe(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Why a job failed is mostly its log's last lines: `nai show` gives them, with
    what could drive a terminal (a job's escape sequences) shown as '?'."""
    client = FakeServerClient()
    failed = client.add_job("f", state="failed", spec={"cpus": 1})
    client.append_log_bytes(failed.id, b"x" * 5000 + b"\nepoch 1\n\n  Traceback\n"
                            b"ValueError: bad \x1b]0;owned\x07 shape\n")
    out = _show(client, failed.id, capsys)
    assert (f"  last lines of its log (`nai logs {failed.id}` for the whole):\n"
            "    epoch 1\n      Traceback\n    ValueError: bad ?]0;owned? shape\n") in out
    assert "\x1b" not in out

    ok = client.add_job("s", state="succeeded", spec={"cpus": 1})
    client.append_log_bytes(ok.id, b"all good\n")
    assert "last lines" not in _show(client, ok.id, capsys)
