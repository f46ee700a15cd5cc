"""A removed replica's `run/` is its user's folder: the daemon empties it as that user,
never with root's rights, and no supervisor step waits on it.

Whatever the folder holds is the user's to arrange: a folder swapped for a FIFO or a
symlink while root's `shutil.rmtree` walks it (it opens each subfolder by name,
following links and blocking on a FIFO for good), or a file system mounted in it.
Here another user's folder is mounted in alice's `run/`: removing the replica as root
deleted bob's files through it; as alice, they stay, and the directory is left for an
admin."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import Daemon  # type: ignore[import-not-found]
from test_service_sockets import OK, create, serve_model, service  # type: ignore[import-not-found]

from nai_server.testing import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")


def test_a_removed_replicas_run_folder_is_emptied_as_its_user(
        daemon_factory, make_user, tmp_path: Path) -> None:
    daemon: Daemon = daemon_factory(services={"probe_seconds": 0.2})
    daemon.start()
    alice, bob = make_user(), make_user()
    with daemon.client() as root:
        assert root.post("/v1/users", json={"name": alice.name}).status_code == 201
    serve_model(daemon, "ok", "python3 serve.py", {"serve.py": OK})
    create(daemon, alice, "ok")
    wait_for(lambda: service(daemon, "ok")["state"] == "ready", timeout=60, what="ready")
    (run,) = [run for run in (daemon.state / "services").glob("*/run")
              if not run.parent.name.startswith(".")]  # not one being built
    assert os.lstat(run).st_uid == alice.uid

    # bob's files, which alice may read but not remove, mounted in alice's run/.
    os.chmod(tmp_path, 0o755)
    precious = tmp_path / "bob"
    precious.mkdir()
    (precious / "keep.txt").write_text("bob's work\n")
    os.chown(precious, bob.uid, bob.gid)
    os.chown(precious / "keep.txt", bob.uid, bob.gid)
    subprocess.run(["mkdir", str(run / "sub")], user=alice.uid, group=alice.gid,
                   extra_groups=[], check=True)
    subprocess.run(["mount", "--bind", str(precious), str(run / "sub")], check=True)
    try:
        with daemon.client() as root:
            assert root.delete("/v1/services/ok").status_code in (200, 204)
        wait_for(lambda: not run.parent.exists() or not (precious / "keep.txt").exists(),
                 timeout=60, what="the replica removed")
        assert (precious / "keep.txt").read_text() == "bob's work\n"
        wait_for(lambda: "could not be emptied as its user" in daemon.log(), timeout=90,
                 what="the purge to give up on alice's run/")
        assert (precious / "keep.txt").read_text() == "bob's work\n"
        (left,) = (daemon.state / "services" / ".removed").iterdir()
        assert (left / "run" / "sub" / "keep.txt").exists()  # for an admin to look at
    finally:
        for mounted in (daemon.state / "services").glob("**/sub"):
            subprocess.run(["umount", "-l", str(mounted)], capture_output=True)
