"""`nai server trust` never records a host key nobody vouched for (issue 17, item 13):
without a terminal it needs `--fingerprint` (checked against the key) or `--yes`, and
it shows the fingerprint either way."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from nai_tui import cli
from nai_tui.config import ClientConfig, ServerEntry
from nai_tui.remote import hostkeys, transports

FP = "SHA256:Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cQ"


class Terminal(io.StringIO):
    def __init__(self, answer: str, tty: bool) -> None:
        super().__init__(answer)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture
def trusted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    """Configures server `lab`; lists what would be written to known_hosts."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    config = ClientConfig.load()
    config.add(ServerEntry("lab", "ssh://alice@gpu1.example.org"))
    config.save()
    key = object()
    monkeypatch.setattr(transports, "fetch_host_key",
                        lambda url, name: ("ssh-ed25519", key, FP))
    written: list[Any] = []
    monkeypatch.setattr(transports, "trust_host_key",
                        lambda url, path, key: written.append((url, key)))
    return written


def trust(monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "",
          tty: bool = False) -> int:
    monkeypatch.setattr("sys.stdin", Terminal(stdin, tty))
    return cli.main(["server", "trust", "lab", *args])


def test_without_a_terminal_nothing_is_trusted_and_the_fingerprint_shown(
        monkeypatch: pytest.MonkeyPatch, trusted: list[Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    assert trust(monkeypatch) == 1
    err = capsys.readouterr().err
    assert trusted == []
    assert FP in err and f"--fingerprint {FP}" in err and "--yes" in err


def test_a_matching_fingerprint_or_yes_trusts(monkeypatch: pytest.MonkeyPatch,
                                              trusted: list[Any],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert trust(monkeypatch, "--fingerprint", FP) == 0
    assert trust(monkeypatch, "--fingerprint", FP.removeprefix("SHA256:") + "=") == 0
    assert trust(monkeypatch, "--yes") == 0
    assert len(trusted) == 3 and trusted[0][0] == "ssh://alice@gpu1.example.org"
    assert capsys.readouterr().err.count(FP) == 3


def test_another_fingerprint_is_refused(monkeypatch: pytest.MonkeyPatch, trusted: list[Any],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    other = FP[:-1] + ("A" if FP[-1] != "A" else "B")
    assert trust(monkeypatch, "--fingerprint", other) == 1
    assert trust(monkeypatch, "--fingerprint", other, tty=True, stdin="y\n") == 1
    assert trust(monkeypatch, "--fingerprint", "") == 1
    assert trusted == []
    assert "intercepting" in capsys.readouterr().err


def test_at_a_terminal_the_person_answers(monkeypatch: pytest.MonkeyPatch,
                                          trusted: list[Any]) -> None:
    assert trust(monkeypatch, tty=True, stdin="n\n") == 1
    assert trusted == []
    assert trust(monkeypatch, tty=True, stdin="y\n") == 0
    assert len(trusted) == 1


def test_fingerprint_and_yes_do_not_go_together(monkeypatch: pytest.MonkeyPatch,
                                                trusted: list[Any]) -> None:
    with pytest.raises(SystemExit) as exited:
        trust(monkeypatch, "--yes", "--fingerprint", FP)
    assert exited.value.code == 2 and trusted == []


def test_fingerprints_compare_as_openssh_prints_them() -> None:
    assert hostkeys.same_fingerprint(FP, FP)
    assert hostkeys.same_fingerprint(" sha256:" + FP[7:] + "=", FP)
    assert not hostkeys.same_fingerprint(FP.lower(), FP)
    assert not hostkeys.same_fingerprint("SHA256:", FP)
