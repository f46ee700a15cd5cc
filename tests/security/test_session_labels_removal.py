"""An annotate session's labels folder (`<state>/annotations/N/labels/`) is its user's:
once its labels are saved, the daemon empties it as that user, never with root's rights.

Whatever the folder holds is the user's to arrange: a directory swapped for a FIFO or a
symlink while root walks it (root's `shutil.rmtree` opens each subdirectory by name,
following links and blocking on a FIFO), or a file system mounted in it (FUSE with
allow_other, an automount, a bind left there). Here another user's folder is mounted
in alice's labels: removing the labels as root deleted bob's files through it; as
alice, they stay.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nai_server.testing import upload_tree, wait_for
from nai_server.testing.plugin_dist import labels_site
from tests.integration.conftest import Daemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")


def test_the_labels_folder_is_emptied_as_its_user(daemon_factory, make_user, tmp_path: Path,
                                                 request: pytest.FixtureRequest,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    labels_site(request, monkeypatch, "labels", "1.0")
    daemon: Daemon = daemon_factory(plugins={"labels": {}})
    daemon.start()
    alice, bob = make_user(), make_user()
    for user in (alice, bob):
        assert daemon.admin("user", "add", user.name).returncode == 0
    with daemon.client() as root:
        made = root.post("/v1/datasets", json={"name": "photos", "shared": True,
                                               "tree_id": upload_tree(root, {"a.txt": b"a"})})
        assert made.status_code == 201, made.text
    made = daemon.as_user(alice, "POST", "/v1/datasets/photos/annotate",
                          {"plugin": "labels", "options": {"classes": "a,b"}, "name": "s1",
                           "to": "mine"})
    assert made.status == 201, made.body
    wait_for(lambda: daemon.as_user(alice, "GET", "/v1/services/s1/invoke/items").status
             == 200, timeout=60, what="the annotator's app")
    (top,) = (daemon.state / "annotations").iterdir()
    labels = top / "labels"
    assert os.lstat(labels).st_uid == alice.uid

    # bob's files, which alice may read but not remove, mounted in alice's folder.
    os.chmod(tmp_path, 0o755)
    precious = tmp_path / "bob"
    precious.mkdir()
    (precious / "keep.txt").write_text("bob's work\n")
    os.chown(precious, bob.uid, bob.gid)
    os.chown(precious / "keep.txt", bob.uid, bob.gid)
    subprocess.run(["mkdir", str(labels / "sub")], user=alice.uid, group=alice.gid,
                   extra_groups=[], check=True)
    subprocess.run(["mount", "--bind", str(precious), str(labels / "sub")], check=True)
    try:
        finished = daemon.as_user(alice, "POST", "/v1/services/s1/invoke/_nai/finish")
        assert finished.status == 200, finished.body

        def saved() -> dict | None:
            info = daemon.as_user(alice, "GET", "/v1/services/s1").json()
            return info if info.get("saved") else None
        assert wait_for(saved, timeout=60, what="the labels saved")["saved"] == "mine@1"

        # Logged once the daemon is done with the folder (emptied, or left).
        wait_for(lambda: "annotate session s1: labels saved" in daemon.log(), timeout=30,
                 what="the daemon done with the labels folder")
        assert (precious / "keep.txt").read_text() == "bob's work\n"
    finally:
        subprocess.run(["umount", "-l", str(labels / "sub")], capture_output=True)
