"""What a new user meets first in the batch CLI (the new-user review): a job that saved
nothing, a followed log that ends mid-line, the end of a long log, cancelling several
jobs. Through `nai`'s real `main` against the in-process server, with real jobs."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from nai_server.app.use_cases import UseCases
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import tick_until
from nai_tui import cli
from nai_tui.cli import commands
from nai_tui.remote.client import ServerClient


@pytest.fixture
def nai(client: ServerClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capfdbinary: pytest.CaptureFixture[bytes]) -> Any:
    """`nai(*args)` → (exit status, stdout, stderr) as text, from the in-process server."""
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setattr(commands, "connect", lambda entry: contextlib.nullcontext(client))
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str, str]:
        capfdbinary.readouterr()
        try:
            status = cli.main(list(args))
        except SystemExit as exc:  # argparse: usage errors
            status = int(exc.code or 0)
        out = capfdbinary.readouterr()
        return status, out.out.decode(), out.err.decode()

    return run


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
    assert status == 0 and out == ""
    assert f"job {job_id} saved no outputs (succeeded)" in err
    assert "$NAI_OUTPUT_DIR" in err and "docs/job-spec.md" in err
    assert not (tmp_path / "nai-outputs").exists()  # no empty folder that looks like a loss
    status, out, err = nai("pull", str(job_id), "--json")
    assert status == 0 and json.loads(out)["downloaded"] == 0
    failed = _ended(nai, client, service, tmp_path / "job", "exit 2")
    status, _, err = nai("pull", str(failed), "--to", str(tmp_path / "here"))
    assert status == 0 and "saved no outputs (failed)" in err
    assert not (tmp_path / "here").exists()

