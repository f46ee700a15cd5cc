"""`nai submit` asks the server to check the job before it uploads anything (a typo
must not cost a large upload), and Ctrl-C while following leaves the job running
unless told otherwise."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import pytest

from nai_server.protocol import NaiError
from nai_tui.cli import commands
from nai_tui.cli.contract import INTERRUPTED


def test_a_spec_the_server_refuses_uploads_nothing(client, project: Path, cache,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "hash_cache", lambda: cache)
    (project / "nai.yaml").write_text("command: python train.py\ndataset: no-such-data\n")
    digest = hashlib.sha256((project / "data" / "weights.bin").read_bytes()).hexdigest()
    with pytest.raises(NaiError, match="no-such-data"):
        commands.submit_folder(client, project)
    assert client.missing_blobs([digest]) == [digest]  # nothing was uploaded
    (project / "nai.yaml").write_text("command: python train.py\n")
    job = commands.submit_folder(client, project)
    assert job.id > 0 and client.missing_blobs([digest]) == []


class _Client:
    name = "lab"

    def __init__(self) -> None:
        self.cancelled: list[int] = []

    def cancel(self, job_id: int) -> None:
        self.cancelled.append(job_id)


class _Job:
    id, name, dataset, model = 11, "train", None, None


def _interrupted(*_: Any) -> int:
    raise KeyboardInterrupt


@pytest.mark.parametrize("cancel", [False, True])
def test_ctrl_c_while_following(cancel: bool, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(commands, "follow", _interrupted)
    client = _Client()
    args = argparse.Namespace(json=False, follow=True, cancel_on_interrupt=cancel)
    assert commands.submitted(args, client, _Job()) == INTERRUPTED  # type: ignore[arg-type]
    said = capsys.readouterr().err
    if cancel:
        assert client.cancelled == [11] and "cancelled job 11" in said
    else:
        assert client.cancelled == []
        assert "job 11 is still running: `nai logs 11 -f` to watch, `nai cancel 11`" in said
