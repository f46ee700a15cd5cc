"""Plugins from the user's side, through `nai`'s real `main` against the in-process
server: `nai plugins`, `nai dataset process`, and client commands that an installed
distribution adds (a broken one costs one warning line, never `nai` itself)."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.config import PluginConfig
from nai_server.plugins import PluginRegistry
from nai_server.plugins.contracts import GROUPS, Kind
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import AsPeer, make_service, tick_until
from nai_server.testing.plugin_dist import write_dist
from nai_tui import cli
from nai_tui.cli import commands, plugin_commands
from nai_tui.remote.client import ServerClient

HELLO = '''
help = "say hello through the server"

def add_arguments(parser):
    parser.add_argument("--to", default="world")

def run(args, client):
    print(f"hello {args.to} from {client.me().user}")
    return 0

class Crasher:
    help = "always fails"

    @staticmethod
    def run(args, client):
        raise RuntimeError("out of luck")

crasher = Crasher()
'''
MODULES = ("t_hello_cmd", "t_broken_cmd")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution installed as pip would: a processor and client commands."""
    root = write_dist(tmp_path / "site", "nai-hello", "0.4.0", {
        "t_hello_cmd": HELLO, "t_broken_cmd": "raise ImportError('needs libhello.so')\n"}, {
        "nai.client_commands": {"hello": "t_hello_cmd", "broken": "t_broken_cmd",
                                "crash": "t_hello_cmd:crasher", "jobs": "t_hello_cmd"},
        "nai.dataset_processors": {"split": "nai_plugins.split"}})
    monkeypatch.syspath_prepend(str(root))
    # The processing job is another process: it finds the distribution the same way.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), *sys.path]))
    importlib.invalidate_caches()
    yield root
    for name in MODULES:
        sys.modules.pop(name, None)


@pytest.fixture
def nai(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """`nai(*args)` → (exit status, stdout, stderr), against a server offering split."""
    service = make_service(tmp_path / "state", plugins=PluginRegistry.discover(
        {"split": PluginConfig(options={"seed": "3"}), "webhook": PluginConfig()}))
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as http:
        client = ServerClient(http)
        for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
            monkeypatch.setenv(var, str(tmp_path / var.lower()))
        monkeypatch.setattr(commands, "connect", lambda entry: contextlib.nullcontext(client))
        monkeypatch.chdir(tmp_path)

        def run(*args: str) -> tuple[int, str, str]:
            capsys.readouterr()
            try:
                status = cli.main(list(args))
            except SystemExit as exc:
                status = int(exc.code or 0)
            out = capsys.readouterr()
            return status, out.out, out.err

        run.service, run.client = service, client  # type: ignore[attr-defined]
        yield run
    service.close()


def test_client_commands_come_from_entry_points_and_a_broken_one_is_one_line(nai) -> None:
    assert GROUPS[Kind.CLIENT_COMMAND] == plugin_commands.GROUP
    status, out, err = nai("hello", "--to", "lab")
    assert status == 0, err
    assert out == f"hello lab from {nai.client.me().user}\n"
    warnings = err.splitlines()
    assert len([w for w in warnings if "'broken'" in w]) == 1
    assert "needs libhello.so" in err and "Traceback" not in err
    assert len([w for w in warnings if "'jobs'" in w]) == 1  # built-ins win
    status, out, _ = nai("jobs", "--json")
    assert status == 0 and json.loads(out) is not None
    status, _, err = nai("crash")
    assert status == 1 and "plugin command 'crash' failed: RuntimeError: out of luck" in err
    assert "Traceback" not in err
    assert nai("hello", "--json")[0] == 2  # it does not speak JSON: a usage error
    status, out, _ = nai("--help")
    assert status == 0 and "say hello through the server" in out


def test_plugins_and_dataset_process(nai, tmp_path: Path) -> None:
    status, out, err = nai("plugins", "--json")
    assert status == 0, err
    rows = {p["name"]: p for p in json.loads(out)}
    assert rows["split"]["kind"] == "dataset_processor" and rows["split"]["state"] == "ok"
    assert "dataset_processor" in nai("plugins")[1]
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        (data / f"{i}.txt").write_text(f"{i}\n")
    assert nai("dataset", "push", "d", str(data))[0] == 0
    status, out, err = nai("dataset", "process", "d@1", "--with", "split", "--to", "d-split",
                           "-o", "ratios=3,1,1", "--json")
    assert status == 0, err
    job_id = json.loads(out)["id"]
    tick_until(nai.service, lambda: nai.client.job(job_id).state in TERMINAL_STATES,
               what="the processing job to end")
    assert nai.client.job(job_id).state == "succeeded", nai.client.job(job_id)
    status, out, err = nai("dataset", "show", "d-split@1", "--json")
    assert status == 0, err
    lineage = json.loads(out)["metadata"]["lineage"]
    assert lineage["datasets"] == ["d@1"]
    assert lineage["processor"]["options"] == {"seed": "3", "ratios": "3,1,1"}
    shown = nai("dataset", "show", "d-split@1")[1]
    version = lineage["processor"]["version"]  # of the distribution that ships `split`
    assert f"from:     d@1 by split {version} (ratios=3,1,1, seed=3) in job {job_id}" in shown
    assert nai("dataset", "process", "d", "--with", "nope")[0] == 3  # not found
    # A typo in an option split takes fails its job before it reads a file; the log's
    # last line says so, and no version is made.
    status, out, err = nai("dataset", "process", "d@1", "--with", "split", "--to", "d-split",
                           "-o", "ratio=1,1")
    assert status == 0, err
    job_id = int(out)
    assert f"`nai logs {job_id} -f` follows it" in err
    tick_until(nai.service, lambda: nai.client.job(job_id).state in TERMINAL_STATES,
               what="the processing job to end")
    assert nai.client.job(job_id).state == "failed"
    status, out, err = nai("logs", str(job_id))
    last = (out + err).rstrip().splitlines()[-1]
    assert "split has no option 'ratio' (given with -o; did you mean 'ratios'?)" in last
    assert "ratios" in out + err and "(default 0.8,0.1,0.1)" in out + err
    assert nai("dataset", "show", "d-split@2")[0] != 0
    assert nai("dataset", "process", "d", "--with", "split", "-o", "seed")[0] != 0


def test_notify_add_list_rm(nai) -> None:
    status, out, err = nai("notify", "add", "webhook", "https://hooks.example/me", "--on",
                           "failed", "--json")
    assert status == 0, err
    sub = json.loads(out)
    assert sub["events"] == ["failed"] and sub["target"] == "https://hooks.example/me"
    status, out, _ = nai("notify", "list", "--json")
    assert status == 0 and [s["id"] for s in json.loads(out)] == [sub["id"]]
    assert "https://hooks.example/me" in nai("notify", "list")[1]
    assert nai("notify", "add", "webhook", "ftp://x/y")[0] != 0
    assert nai("notify", "add", "webhook", "https://x/y", "--on", "exploded")[0] != 0
    assert nai("notify", "rm", str(sub["id"]))[0] == 0
    assert json.loads(nai("notify", "list", "--json")[1]) == []
    assert nai("notify", "rm", str(sub["id"]))[0] == 3
