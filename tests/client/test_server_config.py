"""`nai server add|default|rm` with the real `nai`: an address nai cannot reach is
refused when added (and, written by hand, said in words when used), and the personal
server keeps its name `local` after the first remote server becomes the default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent
FORMS = "use ssh://user@host[:port], user@host[:port], an ~/.ssh/config alias, local"


def nai(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nai"), *args], env=env, capture_output=True, text=True,
                          timeout=120)


def fresh(tmp_path: Path) -> dict[str, str]:
    """A user with no config and no personal server."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    env.pop("NAI_SERVER", None)
    return env


def test_add_refuses_an_address_nai_cannot_reach(tmp_path: Path) -> None:
    env = fresh(tmp_path)
    newline = nai(env, "server", "add", "lab\n", "ssh://me@gpu1")
    assert newline.returncode == 1 and "server name 'lab\\n': use letters" in newline.stderr
    for url in ("http://x", "ssh://host/path", "ssh://host:port", "host:99999", "a b", "local:"):
        refused = nai(env, "server", "add", "bad", url)
        assert refused.returncode == 1, (url, refused.stderr)
        assert "Traceback" not in refused.stderr and "invalid literal" not in refused.stderr
        assert FORMS in refused.stderr or "local:/path/to/nai.sock" in refused.stderr, url
    listed = json.loads(nai(env, "server", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["local"]  # built in: the personal server
    for name, url in [("a", "ssh://alice@gpu1.example.org:2222"), ("b", "bob@gpu2:22"),
                      ("c", "gpubox"), ("d", "[::1]:2200"), ("e", "local:/tmp/nai.sock")]:
        added = nai(env, "server", "add", name, url)
        assert added.returncode == 0, (url, added.stderr)
    listed = json.loads(nai(env, "server", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["local", "a", "b", "c", "d", "e"]


def test_an_address_written_before_the_check_is_said_in_words(tmp_path: Path) -> None:
    env = fresh(tmp_path)
    (tmp_path / "config" / "nai").mkdir(parents=True)
    (tmp_path / "config" / "nai" / "config.yaml").write_text(
        "servers:\n  bad: {url: 'http://x'}\n")
    for args in (("-s", "bad", "jobs"), ("jobs", "--all-servers")):
        used = nai(env, *args)
        assert used.returncode == 1, used.stderr
        assert "cannot read 'http://x' as a server address" in used.stderr
        assert FORMS in used.stderr and "invalid literal" not in used.stderr


def defaults(env: dict[str, str]) -> list[str]:
    """The servers `nai server list --json` marks as the default."""
    return [s["name"] for s in json.loads(nai(env, "server", "list", "--json").stdout)
            if s["default"]]


def written(env: dict[str, str]) -> dict[str, Any]:
    """The client config as saved."""
    path = Path(env["XDG_CONFIG_HOME"]) / "nai" / "config.yaml"
    return yaml.safe_load(path.read_text())  # type: ignore[no-any-return]


def assert_an_older_nai_reads(env: dict[str, str]) -> None:
    """A `nai` older than the built-in `local` refuses, on every command, a config
    whose default is not among its servers: the built-in is written as no default."""
    data = written(env)
    assert "default" not in data or data["default"] in data["servers"], data


def test_the_personal_server_keeps_its_name_after_a_remote_is_added(
        env: dict[str, str]) -> None:
    assert nai(env, "-s", "local", "gpus", "--json").returncode == 0
    added = nai(env, "server", "add", "lab", "ssh://nobody@127.0.0.1:1")
    assert added.returncode == 0, added.stderr
    assert ", the default" in added.stderr
    assert "`nai server default local` makes it the default again" in added.stderr
    assert nai(env, "server", "list", "--json").stdout.count('"default": true') == 1

    mine = nai(env, "-s", "local", "gpus", "--json")
    assert mine.returncode == 0, mine.stderr
    assert json.loads(mine.stdout)["source"] == "fake"
    assert nai(env, "server", "default", "local").returncode == 0
    assert nai(env, "gpus", "--json").returncode == 0  # the default again: no -s needed
    assert defaults(env) == ["local"]
    listing = nai(env, "server", "list").stdout.splitlines()
    assert listing[1].startswith("* local ") and "built in" in listing[1]
    assert listing[2].startswith("  lab ")
    assert_an_older_nai_reads(env)

    second = nai(env, "server", "add", "lab2", "ssh://nobody@127.0.0.1:2")
    assert second.returncode == 0 and "default" not in second.stderr
    assert defaults(env) == ["local"]  # written as no default: still local, not lab2
    assert_an_older_nai_reads(env)
    assert nai(env, "server", "default", "lab2").returncode == 0
    assert defaults(env) == ["lab2"] and written(env)["default"] == "lab2"
    taken = nai(env, "server", "add", "local", "ssh://nobody@127.0.0.1:3")
    assert taken.returncode == 1 and "personal server" in taken.stderr
    builtin = nai(env, "server", "rm", "local")
    assert builtin.returncode == 1 and "nothing to remove" in builtin.stderr
    unknown = nai(env, "-s", "nope", "jobs")
    assert "'local' is this machine's personal server" in unknown.stderr
