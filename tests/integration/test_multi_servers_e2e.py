"""Two real daemons behind one loopback sshd (two configured servers, one ssh alias, two
remote commands), through the real `nai` run as a real non-root user: the merged
listing, --server auto choosing the idle server, a dataset copied sending only the
blobs the target lacks, and a stopped daemon shown as down."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from conftest import Daemon, Sshd, UnixUser, needs_root, wait_for  # type: ignore[import-not-found]
from test_e2e_ssh import nai, setup_client  # type: ignore[import-not-found]

pytestmark = [needs_root]


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _write(user: UnixUser, rel: str, data: bytes) -> None:
    path = user.home / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    for p in [path, *path.relative_to(user.home).parents]:
        os.chown(user.home / p, user.uid, user.gid)


def test_two_servers_from_one_client(daemon_factory: Callable[..., Daemon], sshd: Sshd,
                                     make_user: Callable[[], UnixUser]) -> None:
    a, b = daemon_factory(), daemon_factory()
    a.start()
    b.start()
    alice = make_user()
    setup_client(alice, sshd)
    for name, daemon in (("a", a), ("b", b)):
        assert daemon.admin("user", "add", alice.name).returncode == 0
        relay = f"nai-server dial-stdio --socket {daemon.socket}"
        assert nai(alice, "server", "add", name, "gpu", "--remote-command", relay
                   ).returncode == 0
        assert nai(alice, "server", "trust", name, "--yes").returncode == 0

    # a is busy with a whole-server job; b is idle.
    busy = nai(alice, "--server", "a", "submit", "proj", "--command", "sleep 120",
               "--gpus", "2", "--time-limit", "1h", "--name", "busy", "--json")
    assert busy.returncode == 0, busy.stderr
    busy_id = json.loads(busy.stdout)["id"]
    wait_for(lambda: json.loads(nai(alice, "--server", "a", "show", str(busy_id), "--json")
                                .stdout)["state"] == "running", what="a's job to run")
    try:
        dry = nai(alice, "--server", "a", "submit", "proj", "--command", "true",
                  "--gpus", "1", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["reason"] == "Resources"
        auto = nai(alice, "--server", "auto", "submit", "proj", "--command", "echo on-b",
                   "--gpus", "1", "--time-limit", "10m", "--name", "picked", "--json")
        assert auto.returncode == 0, auto.stderr
        assert "chose b: starts now" in auto.stderr and "a: starts in about" in auto.stderr

        merged = nai(alice, "jobs", "--all-servers", "--json")
        assert merged.returncode == 0, merged.stderr
        assert sorted((j["server"], j["name"]) for j in json.loads(merged.stdout)["jobs"]) \
            == [("a", "busy"), ("b", "picked")]
        table = nai(alice, "gpus", "--all-servers")
        assert table.stdout.splitlines()[0].split()[:2] == ["SERVER", "GPU"]
        assert len(table.stdout.splitlines()) == 5, table.stdout

        # A dataset on a, half of whose bytes b already holds (in another dataset).
        shared = os.urandom(300_000)
        _write(alice, "data/shared.bin", shared)
        _write(alice, "data/own/new.bin", os.urandom(40_000))
        _write(alice, "half/shared.bin", shared)
        assert nai(alice, "--server", "a", "dataset", "push", "d", "data", "--tag", "v"
                   ).returncode == 0
        assert nai(alice, "--server", "b", "dataset", "push", "h", "half").returncode == 0
        copied = nai(alice, "dataset", "copy", "d@1", "--from", "a", "--to", "b", "--json")
        assert copied.returncode == 0, copied.stderr
        done = json.loads(copied.stdout)
        assert (done["blobs_sent"], done["blobs_total"], done["bytes_sent"]) == (1, 2, 40_000)
        pulled = nai(alice, "--server", "b", "dataset", "pull", "d@v", "--to", "got")
        assert pulled.returncode == 0, pulled.stderr
        assert _digests(alice.home / "got") == _digests(alice.home / "data")

        # b stops: the listing shows a's jobs and says, in one line, that b is down.
        b.stop()
        down = nai(alice, "jobs", "--all-servers", "--timeout", "30")
        assert down.returncode == 0, down.stderr
        assert [line.split()[0] for line in down.stdout.splitlines()[1:]] == ["a"]
        said = [line for line in down.stderr.splitlines() if line.startswith("b: down: ")]
        assert len(said) == 1 and "Traceback" not in down.stderr, down.stderr
    finally:
        nai(alice, "--server", "a", "cancel", str(busy_id))
