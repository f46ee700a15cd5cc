"""What a user leaves in their session's labels folder is read as that user, bounded,
and never makes the daemon hang or read for them what they may not read.

alice's replica (her own program) or alice herself fills the folder, before the
session ends, with: a symlink to /etc/shadow, a FIFO nobody writes, a huge sparse file.
The link and the sparse file are refused by name, the labels not saved (they stay
where they are, the session says so); the FIFO is skipped (it holds no data) without
blocking anything. The daemon goes on answering, and her next session saves.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from nai_server.testing import upload_tree, wait_for
from nai_server.testing.plugin_dist import labels_site
from tests.integration.conftest import Daemon, UnixUser

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")

TRAPS = {
    "shadow": "os.symlink('/etc/shadow', 'shadow')",
    "fifo": "os.mkfifo('fifo')",
    "sparse": "f = open('sparse', 'wb'); f.truncate(4 << 30); f.close()",
}


def in_folder(daemon: Daemon, user: UnixUser, code: str) -> None:
    folder = next(p for p in (daemon.state / "annotations").glob("*/labels")
                  if p.stat().st_uid == user.uid)
    subprocess.run(["python3", "-c", f"import os; os.chdir({str(folder)!r}); {code}"],
                   user=user.uid, group=user.gid, extra_groups=[], check=True, timeout=30)


def session(daemon: Daemon, user: UnixUser, name: str) -> None:
    made = daemon.as_user(user, "POST", "/v1/datasets/photos/annotate",
                          {"plugin": "labels", "options": {"classes": "a,b"}, "name": name,
                           "to": "mine"})
    assert made.status == 201, made.body
    wait_for(lambda: daemon.as_user(user, "GET", f"/v1/services/{name}/invoke/items").status
             == 200, timeout=60, what=f"session {name}'s app")
    assert daemon.as_user(user, "POST", f"/v1/services/{name}/invoke/label",
                          {"item": "a.txt", "label": "a"}).status == 200


def ended(daemon: Daemon, user: UnixUser, name: str) -> dict:
    assert daemon.as_user(user, "DELETE", f"/v1/services/{name}").status == 200

    def done() -> dict | None:
        info = daemon.as_user(user, "GET", f"/v1/services/{name}").json()
        said = info.get("message") or ""
        return info if info.get("saved") or "not saved" in said else None
    return wait_for(done, timeout=90, what=f"session {name} settled")


@pytest.mark.parametrize("trap", sorted(TRAPS))
def test_a_trapped_labels_folder_is_refused_by_name(trap: str, daemon_factory, make_user,
                                                    request: pytest.FixtureRequest,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    labels_site(request, monkeypatch, "labels", "1.0")
    daemon: Daemon = daemon_factory(plugins={"labels": {}})
    daemon.start()
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    with daemon.client() as root:
        made = root.post("/v1/datasets", json={"name": "photos", "shared": True,
                                               "tree_id": upload_tree(root, {"a.txt": b"a"})})
        assert made.status_code == 201, made.text
    session(daemon, alice, "s1")
    in_folder(daemon, alice, TRAPS[trap])
    info = ended(daemon, alice, "s1")
    if trap == "fifo":
        assert info["saved"] == "mine@1", info
        v = daemon.as_user(alice, "GET", "/v1/datasets/mine/versions/1").json()
        files = daemon.as_user(alice, "GET", f"/v1/trees/{v['tree_id']}").json()
        assert "labels.jsonl" in str(files) and "fifo" not in str(files), files
        return
    assert info["saved"] is None and trap in info["message"], info
    assert daemon.as_user(alice, "GET", "/v1/datasets/mine").status == 404
    # The daemon answers, and a clean session of hers saves.
    session(daemon, alice, "s2")
    assert ended(daemon, alice, "s2")["saved"] == "mine@1"
