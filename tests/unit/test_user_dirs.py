"""One rule for where nai keeps things on a machine (XDG base directories), used by
the server's personal paths and by the client alike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nai_server.paths import default_paths, user_dir
from nai_tui import config
from nai_tui.sync.hashcache import default_cache_path

XDG = ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR")


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in XDG:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_without_xdg_variables_the_usual_folders(home: Path) -> None:
    assert user_dir("config") == home / ".config" / "nai"
    assert user_dir("cache") == home / ".cache" / "nai"
    assert user_dir("data") == home / ".local" / "share" / "nai"
    assert user_dir("runtime") == Path(f"/tmp/nai-{os.getuid()}")


def test_xdg_variables_win(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in XDG:
        monkeypatch.setenv(name, str(home / name.lower()))
    assert user_dir("config") == home / "xdg_config_home" / "nai"
    assert user_dir("cache") == home / "xdg_cache_home" / "nai"
    assert user_dir("data") == home / "xdg_data_home" / "nai"
    assert user_dir("runtime") == home / "xdg_runtime_dir" / "nai"


def test_an_empty_variable_counts_as_unset(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "")
    assert user_dir("config") == home / ".config" / "nai"
    assert user_dir("runtime") == Path(f"/tmp/nai-{os.getuid()}")


def test_client_and_personal_server_agree(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variables in ({}, {name: str(home / name) for name in XDG}):
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        state, socket = default_paths("personal")
        assert (config.personal_state(), config.personal_socket()) == (state, socket)
        assert socket == user_dir("runtime") / "nai.sock" and state == user_dir("data")
        assert config.config_dir() == user_dir("config")
        assert default_cache_path() == config.cache_dir() / "hashes.sqlite"
    assert default_paths("multi-user") == (Path("/var/lib/nai"), Path("/run/nai/nai.sock"))
