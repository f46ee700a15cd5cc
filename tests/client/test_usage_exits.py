"""Usage mistakes exit 2, as `nai --help` promises, and name what was wrong: also those
argparse cannot see (a -f spec file that is not there)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nai_tui import cli
from nai_tui.cli import commands
from nai_tui.config import ClientConfig, ServerEntry
from nai_tui.testing import FakeServerClient


@pytest.fixture
def nai(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> Any:
    """Run `nai ARGS` in `tmp_path` against an in-memory server: (status, stderr)."""
    client = FakeServerClient()

    @contextlib.contextmanager
    def connect(entry: Any) -> Iterator[FakeServerClient]:
        yield client

    monkeypatch.setattr(commands, "connect", connect)
    monkeypatch.setattr(ClientConfig, "choose", lambda self, name=None: ServerEntry("t", "t"))
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
        return code, capsys.readouterr().err
    return run


def test_a_missing_spec_file_is_named_and_a_usage_mistake(nai: Any) -> None:
    code, err = nai("submit", "-f", "prdo.yaml", "--command", "echo hi", "--dry-run")
    assert code == 2 and "prdo.yaml: no such file" in err
    code, err = nai("submit", "-f", "missing.yaml")
    assert code == 2 and "missing.yaml: no such file" in err and "no nai.yaml" not in err


@pytest.mark.parametrize(("argv", "named"), [
    (["submit", "--gpus", "-1", "--command", "echo hi"], "--gpus"),
    (["submit", "--env", "FOO", "--command", "echo hi"], "KEY=VALUE"),
    (["finetune", "m", "--dataset", "d", "--gpus", "-2"], "--gpus"),
    (["dataset", "process", "pets", "--with", "split", "-o", "ratios"], "KEY=VALUE"),
    (["dataset", "annotate", "pets", "--with", "labeller", "--gpus", "-1"], "--gpus"),
    (["jobs", "--state", "bogus"], "bogus"),
    (["metrics", "1", "--last", "-3"], "--last"),
    (["dataset", "tag", "pets@"], "NAME@3"),
])
def test_usage_mistakes_exit_2_and_say_what_was_wrong(nai: Any, argv: list[str],
                                                      named: str) -> None:
    code, err = nai(*argv)
    assert code == 2, err
    assert named in err


def test_errors_that_are_not_usage_mistakes_keep_their_status(nai: Any) -> None:
    assert nai("show", "99")[0] == 3  # not found
    assert nai("pull", "99")[0] == 3
