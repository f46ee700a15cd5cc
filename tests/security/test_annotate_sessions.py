"""Annotate sessions (services of kind "annotator") as real unix users through the real
daemon: who may open one follows the dataset's visibility as well as the session's, a
labeller who may not change the session cannot end it, the gateway never reaches one,
nothing a user sends makes a service a session, and the replica (the user's own
program) cannot change the dataset it shows.

- carol, in alice's group, sees alice's session but may not read its dataset: refused,
  until alice shares the dataset with the group;
- bob, in no group of alice's, does not see it; made "shared", he sees it but still may
  not read the dataset: refused;
- carol may label but not finish nor stop it (alice's, not the group's);
- no gateway token for a session, never public; a create request naming a
  session's fields is refused; root may not start one (it would run as root);
- as alice (what her replica could do), the dataset's files cannot be written;
- a dataset's files named like modules are never imported by its annotator.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nai_server.host.replicas import MODEL_DIR
from nai_server.testing import upload_tree, wait_for
from nai_server.testing.plugin_dist import labels_site
from tests.integration.conftest import Daemon, UnixUser

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")

DATA = {"a.txt": b"a cat\n", "b.txt": b"a dog\n"}


@pytest.fixture
def session(daemon_factory, make_user, request: pytest.FixtureRequest,
            monkeypatch: pytest.MonkeyPatch):
    labels_site(request, monkeypatch, "labels", "1.0")
    # The daemon's own PYTHONPATH names the working directory too (an empty and a
    # relative entry), as a careless admin's may: a replica must not inherit those.
    monkeypatch.setenv("PYTHONPATH", os.environ["PYTHONPATH"] + "::.")
    daemon: Daemon = daemon_factory(plugins={"labels": {}})
    daemon.start()
    alice, bob, carol = make_user(), make_user(), make_user()
    for user in (alice, bob, carol):
        assert daemon.admin("user", "add", user.name).returncode == 0
    assert daemon.admin("group", "add", "lab").returncode == 0
    for user in (alice, carol):
        assert daemon.admin("group", "add-member", "lab", user.name).returncode == 0
    assert daemon.admin("group", "add", "solo").returncode == 0
    assert daemon.admin("group", "add-member", "solo", alice.name).returncode == 0
    solo_dataset(daemon)  # alice's (her group's alone): carol, bob may not read it
    made = daemon.as_user(alice, "POST", "/v1/datasets/secret/annotate",
                          {"plugin": "labels", "options": {"classes": "a,b"},
                           "name": "s1", "to": "secret-labels"})
    assert made.status == 201, made.body
    wait_for(lambda: daemon.as_user(alice, "GET", ITEMS).status == 200, timeout=60,
             what="the annotator's app")
    yield daemon, alice, bob, carol
    daemon.as_user(alice, "DELETE", "/v1/services/s1")


ITEMS = "/v1/services/s1/invoke/items"
LABEL = "/v1/services/s1/invoke/label"


def test_who_may_label_follows_the_datasets_visibility(session) -> None:
    daemon, alice, bob, carol = session
    # carol sees the session (alice's groups'), but not the dataset: refused.
    refused = daemon.as_user(carol, "GET", ITEMS)
    assert refused.status == 403 and b"may not read" in refused.body, refused.body
    refused = daemon.as_user(carol, "POST", LABEL, {"item": "a.txt", "label": "a"})
    assert refused.status == 403, refused.body
    assert daemon.as_user(bob, "GET", ITEMS).status == 404  # not even the session
    # Shared with the group, the dataset may be labelled by its members.
    assert daemon.as_user(alice, "PUT", "/v1/datasets/secret/sharing",
                          {"groups": ["lab"]}).status == 200
    assert daemon.as_user(carol, "GET", ITEMS).status == 200
    assert daemon.as_user(carol, "POST", LABEL, {"item": "a.txt", "label": "a"}).status == 200
    # A session shared with everyone shows bob the session, never the dataset.
    assert daemon.as_user(alice, "PATCH", "/v1/services/s1",
                          {"visibility": "shared"}).status == 200
    assert daemon.as_user(bob, "GET", "/v1/services/s1").status == 200
    refused = daemon.as_user(bob, "GET", ITEMS)
    assert refused.status == 403 and b"may not read" in refused.body, refused.body
    assert daemon.as_user(bob, "GET", "/v1/services/s1/invoke/file/a.txt").status == 403


def test_a_labeller_may_not_end_a_session_that_is_not_theirs(session) -> None:
    daemon, alice, _bob, carol = session
    assert daemon.as_user(alice, "PUT", "/v1/datasets/secret/sharing",
                          {"groups": ["lab"]}).status == 200
    assert daemon.as_user(carol, "POST", LABEL, {"item": "b.txt", "label": "b"}).status == 200
    for method, path in (("POST", "/v1/services/s1/invoke/_nai/finish"),
                         ("DELETE", "/v1/services/s1")):
        refused = daemon.as_user(carol, method, path)
        assert refused.status == 403, refused.body
    assert daemon.as_user(alice, "GET", "/v1/services/s1").json()["state"] == "ready"


def test_no_gateway_token_no_forged_session_and_never_as_root(session) -> None:
    daemon, alice, _bob, _carol = session
    with daemon.client() as root:  # an admin, but the annotator would run as root
        refused = root.post("/v1/datasets/secret/annotate", json={
            "plugin": "labels", "options": {"classes": "a,b"}, "name": "as-root"})
        assert refused.status_code == 403 and "never as root" in refused.text, refused.text
    refused = daemon.as_user(alice, "POST", "/v1/services/s1/tokens", {"label": "x"})
    assert refused.status == 400 and b"annotate session" in refused.body, refused.body
    refused = daemon.as_user(alice, "PATCH", "/v1/services/s1", {"public": True})
    assert refused.status == 400 and b"annotate session" in refused.body, refused.body
    forged = daemon.as_user(alice, "POST", "/v1/services", {
        "name": "fake", "model": "secret@1", "kind": "annotator",
        "annotation": {"plugin": "labels", "to": "secret", "dir": "/etc", "done": False}})
    assert forged.status == 400 and b"kind" in forged.body, forged.body
    assert daemon.as_user(alice, "GET", "/v1/services/fake").status == 404


def solo_dataset(daemon: Daemon) -> None:
    """Dataset `secret`, owned by group solo (alice alone), set up by root."""
    with daemon.client() as root:
        made = root.post("/v1/datasets", json={"name": "secret", "group": "solo",
                                               "tree_id": upload_tree(root, DATA)})
        assert made.status_code == 201, made.text


def as_user(user: UnixUser, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], user=user.uid, group=user.gid,
                          extra_groups=[], capture_output=True, text=True, timeout=30)


def test_the_replica_cannot_change_the_dataset(session) -> None:
    daemon, alice, _bob, _carol = session
    top = next(p for p in (daemon.state / "services").iterdir() if p.is_dir())
    shown = top / MODEL_DIR / "a.txt"
    assert shown.read_bytes() == DATA["a.txt"]
    for code in (f"open({str(shown)!r}, 'ab').write(b'x')", f"import os; os.unlink({str(shown)!r})",
                 f"open({str(shown.parent / 'new.txt')!r}, 'w')"):
        tried = as_user(alice, code)
        assert tried.returncode != 0 and "PermissionError" in tried.stderr, tried
    assert shown.read_bytes() == DATA["a.txt"]


def test_a_datasets_files_are_never_imported_by_its_annotator(session, tmp_path: Path) -> None:
    # A dataset anyone may share could hold modules named like the annotator's own
    # (the replica runs in the dataset's folder): the session's user must not run them.
    daemon, alice, _bob, _carol = session
    os.chmod(tmp_path, 0o777)
    marker = tmp_path / "ran"
    trap = {name: f"open({str(marker)!r}, 'w').write({name!r})\n".encode()
            for name in ("pluggy.py", "uvicorn.py", "starlette.py", "nai_plugins.py")}
    with daemon.client() as root:
        made = root.post("/v1/datasets", json={"name": "trap", "shared": True,
                                               "tree_id": upload_tree(root, trap)})
        assert made.status_code == 201, made.text
    made = daemon.as_user(alice, "POST", "/v1/datasets/trap/annotate",
                          {"plugin": "labels", "options": {"classes": "a"}, "name": "s2",
                           "to": "t2"})
    assert made.status == 201, made.body
    wait_for(lambda: daemon.as_user(alice, "GET", "/v1/services/s2/invoke/items").status
             == 200, timeout=60, what="the annotator's app over the trap")
    assert not marker.exists(), marker.read_text()
    daemon.as_user(alice, "DELETE", "/v1/services/s2")
