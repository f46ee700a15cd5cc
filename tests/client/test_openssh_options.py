"""The openssh transport puts AES-GCM first unless the user chose ciphers (real `ssh -G`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nai_tui.remote.transports import OpenSshBackend

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client")
PREFER = "Ciphers=^aes128-gcm@openssh.com"


def backend(tmp_path: Path, config: str = "", options: tuple[str, ...] = ()) -> OpenSshBackend:
    (tmp_path / "ssh_config").write_text(config)
    made = OpenSshBackend("ssh://alice@example.invalid:2222", ssh_config=tmp_path / "ssh_config",
                          ssh_options=options, runtime_dir=tmp_path / "run")
    made.prefer_fast_cipher()
    return made


def test_gcm_goes_first_when_nothing_chose_ciphers(tmp_path: Path) -> None:
    argv = backend(tmp_path).base_argv
    assert PREFER in argv
    assert argv[argv.index(PREFER) + 1:] == ["--", "example.invalid"]  # before the host


def test_the_users_ciphers_are_left_alone(tmp_path: Path) -> None:
    assert PREFER not in backend(tmp_path, config="Ciphers aes256-ctr\n").base_argv
    assert PREFER not in backend(tmp_path, options=("-c", "aes256-ctr")).base_argv
    assert PREFER not in backend(tmp_path, options=("-o", "Ciphers=aes256-ctr")).base_argv
