"""`nai demo --to DIR` lists only what it pulled: files already in DIR are not the job's
outputs, and one it did not overwrite is reported, and exits 5, as `nai pull` does."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nai_server.protocol import TreeEntryModel, TreeInfo
from nai_tui.cli import commands, local, setup_commands
from nai_tui.cli.contract import KEPT
from nai_tui.sync.pull import Kept, PullResult


class _Client:
    def outputs(self, job_id: int) -> TreeInfo:
        return TreeInfo(id="t", files=2, size=2, entries=[
            TreeEntryModel(path="summary.json"), TreeEntryModel(path="weights.json")])


def _run(monkeypatch: pytest.MonkeyPatch, dest: Path, kept: tuple[Kept, ...]) -> int:
    @contextlib.contextmanager
    def connect(entry: Any) -> Iterator[_Client]:
        yield _Client()

    monkeypatch.setattr(local, "up", lambda fake_gpus: (1, True))
    monkeypatch.setattr(local, "down", lambda: None)
    monkeypatch.setattr(commands, "connect", connect)
    monkeypatch.setattr(commands, "submit_folder", lambda client, folder: argparse.Namespace(id=7))
    monkeypatch.setattr(commands, "follow", lambda client, job_id: 0)
    monkeypatch.setattr(commands, "hash_cache", lambda: None)
    monkeypatch.setattr(setup_commands.sync, "pull", lambda client, tree, into, cache: PullResult(
        downloaded=2 - len(kept), skipped=0, bytes=2, kept=kept))
    args = argparse.Namespace(fake_gpus=0, to=str(dest), keep=False)
    return setup_commands._demo(args, dest)


def test_demo_lists_only_the_pulled_outputs_and_reports_kept_files(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "dout"
    dest.mkdir()
    (dest / "weights.json").write_text('{"old":1}')
    (dest / "stale.txt").write_text("x")
    code = _run(monkeypatch, dest, (Kept("weights.json", "changed here"),))
    out, err = capsys.readouterr()
    assert code == KEPT
    assert out.splitlines() == [str(dest / "summary.json")]
    assert "(1 file)" in err and "stale.txt" not in out + err
    assert f"not overwritten: {dest / 'weights.json'}" in err
    assert f"`nai up`, then `nai pull 7 --to {dest} --force`" in err


def test_demo_into_an_empty_folder_lists_every_output(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "dout"
    assert _run(monkeypatch, dest, ()) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(dest / "summary.json"), str(dest / "weights.json")]
    assert "(2 files)" in err and "not overwritten" not in err
