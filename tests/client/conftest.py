"""Fixtures of the client tests: the in-process server's client, the CLI's main() run
against it (`nai`, `nai_raw`), a hash cache, a project, and a personal server for tests
that run the real `nai` command."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from sync_kit import MiB, noise, write

from nai_server.api import create_app
from nai_server.app.use_cases import UseCases
from nai_server.testing import AsPeer
from nai_tui import cli
from nai_tui.cli import commands
from nai_tui.remote.client import ServerClient
from nai_tui.sync.hashcache import HashCache

Run = Callable[..., tuple[int, bytes, bytes]]


@pytest.fixture
def client(service: UseCases) -> Iterator[ServerClient]:
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as http:
        yield ServerClient(http)


@pytest.fixture
def nai_raw(client: ServerClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
            capfdbinary: pytest.CaptureFixture[bytes]) -> Run:
    """`nai_raw(*args)` → (exit status, stdout, stderr) as bytes: the CLI's main()
    talking to the in-process server, run in `tmp_path` with XDG folders of its own."""
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setattr(commands, "connect", lambda entry: contextlib.nullcontext(client))
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, bytes, bytes]:
        capfdbinary.readouterr()
        try:
            status = cli.main(list(args))
        except SystemExit as exc:  # argparse: usage errors, --help
            status = int(exc.code or 0)
        out = capfdbinary.readouterr()
        return status, out.out, out.err

    return run


@pytest.fixture
def nai(nai_raw: Run) -> Callable[..., tuple[int, str, str]]:
    """`nai(*args)` → (exit status, stdout, stderr) as text (see `nai_raw`)."""

    def run(*args: str) -> tuple[int, str, str]:
        status, out, err = nai_raw(*args)
        return status, out.decode(), err.decode()

    return run


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[HashCache]:
    with HashCache(tmp_path / "hashes.sqlite") as c:
        yield c


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(root, "train.py", "print('hi')\n", 0o755)
    write(root, "lib/model.py", "W = 1\n")
    write(root, "lib/copy_of_model.py", "W = 1\n")
    write(root, "data/weights.bin", noise(3 * MiB + 17, 1), 0o600)
    write(root, "empty", b"")
    (root / "lib" / "link_to_model").symlink_to("model.py")
    (root / "data_link").symlink_to("data")
    return root



@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory,
        request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment of a user with a personal server of their own (`nai up` with the
    module's PERSONAL_GPUS fake GPUs, one by default), for tests that run the real `nai`
    command; the server goes down after the module."""
    gpus = getattr(request.module, "PERSONAL_GPUS", 1)
    root = tmp_path_factory.mktemp("personal")
    bin_dir = Path(sys.executable).parent
    environ = {**os.environ, "XDG_CONFIG_HOME": str(root / "config"),
               "XDG_CACHE_HOME": str(root / "cache"), "XDG_DATA_HOME": str(root / "data"),
               "XDG_RUNTIME_DIR": str(root / "run"),
               "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    (root / "run").mkdir()
    up = subprocess.run([str(bin_dir / "nai"), "up", "--fake-gpus", str(gpus)], env=environ,
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    yield environ
    subprocess.run([str(bin_dir / "nai"), "down"], env=environ, capture_output=True, timeout=60)
