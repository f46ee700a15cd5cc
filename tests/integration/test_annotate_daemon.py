"""Annotate sessions (`nai dataset annotate`) through the real daemon, as real non-root
unix users: the `labels` app runs as its owner's service (kind "annotator") on a 0600
socket of theirs, the daemon relays to it only for those who may label, who is
labelling comes from the connection (not from what the caller claims), and once the
session is stopped (`nai service stop`, or the page's "Finish and save") its labels
are the dataset's next version, with lineage naming the input, the annotator, the
session and who labelled. A session that fails keeps its labels the same way."""

from __future__ import annotations

import json
import os
import signal
import stat

import pytest
from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]
from test_registry_access import Actor, upload_tree  # type: ignore[import-not-found]

from nai_server.host.replicas import SOCKET_DIR, SOCKET_NAME
from nai_server.testing.plugin_dist import labels_site

pytestmark = [needs_root]

DATA = {"a.txt": b"a cat sat\n", "b.txt": b"a dog ran\n", "img/c.png": b"\x89PNG fake"}


@pytest.fixture
def annotating(daemon_factory, make_user, request: pytest.FixtureRequest,
               monkeypatch: pytest.MonkeyPatch):
    labels_site(request, monkeypatch, "labels2", "1.2.0")
    daemon: Daemon = daemon_factory(plugins={"labels2": {}})
    daemon.start()
    alice, bob = make_user(), make_user()
    for user in (alice, bob):
        assert daemon.admin("user", "add", user.name).returncode == 0
    sender = Actor(daemon, alice)
    tree = upload_tree(daemon, DATA, sender)
    sender.http.close()
    made = daemon.as_user(alice, "POST", "/v1/datasets", {"name": "photos", "tree_id": tree})
    assert made.status == 201, made.body
    return daemon, alice, bob, tree


def started(daemon: Daemon, user, **body) -> str:
    """The session's service name, once its app answers."""
    made = daemon.as_user(user, "POST", "/v1/datasets/photos/annotate",
                          {"plugin": "labels2", "options": {"classes": "cat,dog"}, **body})
    assert made.status == 201, made.body
    info = made.json()
    assert info["kind"] == "annotator" and info["model"].startswith("photos@"), info
    name = info["name"]

    def up() -> bool:
        return daemon.as_user(user, "GET", app(name, "items")).status == 200
    wait_for(up, timeout=60, what=f"session {name}'s app")
    return name


def app(name: str, path: str = "") -> str:
    return f"/v1/services/{name}/invoke/{path}"


def saved(daemon: Daemon, user, name: str) -> dict:
    """The session's view once its labels are saved."""
    def done() -> dict | None:
        info = daemon.as_user(user, "GET", f"/v1/services/{name}").json()
        said = info.get("message") or ""
        return info if info.get("saved") or "not saved" in said or "no version" in said \
            else None
    return wait_for(done, timeout=60, what=f"session {name}'s labels to be saved")


def labels_of(daemon: Daemon, user, ref: str) -> list[tuple[str, str, str]]:
    """(item, label, by) of each line of labels.jsonl in dataset version `ref`."""
    name, _, version = ref.partition("@")
    v = daemon.as_user(user, "GET", f"/v1/datasets/{name}/versions/{version}").json()
    got = daemon.as_user(user, "GET", f"/v1/trees/{v['tree_id']}/file?path=labels.jsonl")
    assert got.status == 200, got.body
    rows = [json.loads(line) for line in got.body.decode().splitlines()]
    return [(r["item"], r["label"], r["by"]) for r in rows]


def test_labels_made_through_the_daemon_become_the_next_version(annotating) -> None:
    daemon, alice, bob, tree = annotating
    name = started(daemon, alice)
    shown = daemon.as_user(alice, "GET", f"/v1/services/{name}").json()
    assert shown["plugin"] == "labels2 1.2.0" and shown["labels_to"] == "photos", shown
    assert shown["gpus"] == 0 and shown["state"] == "ready", shown
    (replica,) = shown["replica_info"]
    assert replica["stats"]["requests"] >= 1  # request metrics, as any service's

    number = next(p for p in (daemon.state / "services").iterdir() if p.is_dir()).name
    sock = daemon.state / "services" / number / SOCKET_DIR / SOCKET_NAME
    st = os.lstat(sock)
    assert stat.S_ISSOCK(st.st_mode) and st.st_uid == alice.uid
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert os.stat(f"/proc/{replica['pid']}").st_uid == alice.uid  # as the user, not root

    page = daemon.as_user(alice, "GET", app(name))
    assert page.status == 200 and b"nai labels" in page.body
    assert daemon.as_user(alice, "GET", app(name, "items")).json()["total"] == 3
    # Another user (not in alice's groups) reaches neither the app nor its labels.
    for method, path, body in (("GET", "items", None),
                               ("POST", "label", {"item": "a.txt", "label": "dog"}),
                               ("POST", "_nai/finish", None)):
        refused = daemon.as_user(bob, method, app(name, path), body)
        assert refused.status in (403, 404), refused.body
    with daemon.client() as root:  # an admin may
        assert root.get(app(name, "items")).status_code == 200
    # Who labels is the connection's user, whatever the request claims.
    made = daemon.as_user(alice, "POST", app(name, "label"), {"item": "a.txt", "label": "cat"},
                          headers={"X-Nai-User": "mallory"})
    assert made.status == 200 and made.json()["labelled"] == 1, made.body
    made = daemon.as_user(alice, "POST", app(name, "label"),
                          {"item": "img/c.png", "label": "dog"})
    assert made.json()["labelled"] == 2
    assert daemon.as_user(alice, "GET", app(name, "file/img/c.png")).body == DATA["img/c.png"]
    logs = daemon.as_user(alice, "GET", f"/v1/services/{name}/logs")
    assert b"annotating photos@1 with labels2" in logs.body, logs.body

    finished = daemon.as_user(alice, "POST", app(name, "_nai/finish"))
    assert finished.status == 200 and finished.json()["finishing"], finished.body
    info = saved(daemon, alice, name)
    assert info["state"] == "stopped" and info["saved"] == "photos@2", info
    entry = daemon.as_user(alice, "GET", "/v1/datasets/photos").json()
    v1, v2 = entry["versions"]
    assert v1["tree_id"] == tree  # the input is untouched
    lineage = v2["metadata"]["lineage"]
    assert lineage["datasets"] == ["photos@1"] and lineage["service"] == name
    assert lineage["annotator"] == {"plugin": "labels2", "version": "1.2.0",
                                    "options": {"classes": "cat,dog"}}
    assert lineage["labelled_by"] == [alice.name]
    assert labels_of(daemon, alice, "photos@2") == [
        ("a.txt", "cat", alice.name), ("img/c.png", "dog", alice.name)]
    assert v2["files"] == len(DATA) + 1  # the input's files and the labels
    # Once stopped, the app is gone: 503, never a hang; its folder went with it.
    assert daemon.as_user(alice, "GET", app(name, "items")).status == 503
    wait_for(lambda: not any((daemon.state / "annotations").iterdir()), timeout=30,
             what="the session's folder removed")


def test_a_session_whose_replica_keeps_dying_keeps_its_labels(annotating) -> None:
    daemon, alice, _bob, tree = annotating
    name = started(daemon, alice, to="photo-labels", visibility="private")
    made = daemon.as_user(alice, "POST", app(name, "label"), {"item": "b.txt", "label": "dog"})
    assert made.status == 200
    # The replica is killed: it comes back with the labels made so far.
    pid = daemon.as_user(alice, "GET", f"/v1/services/{name}").json()["replica_info"][0]["pid"]
    os.killpg(pid, signal.SIGKILL)

    def back() -> dict | None:
        answer = daemon.as_user(alice, "GET", app(name, "items"))
        return answer.json() if answer.status == 200 else None
    assert wait_for(back, timeout=60, what="the replica to restart")["labelled"] == 1
    # The version it shows is not removed under it.
    refused = daemon.as_user(alice, "DELETE", "/v1/datasets/photos/versions/1")
    assert refused.status == 409 and name.encode() in refused.body, refused.body
    # An admin stops it: saved all the same, as the session's user's version.
    with daemon.client() as root:
        assert root.delete(f"/v1/services/{name}").status_code == 200
    info = saved(daemon, alice, name)
    assert info["saved"] == "photo-labels@1", info
    assert labels_of(daemon, alice, "photo-labels@1") == [("b.txt", "dog", alice.name)]
    entry = daemon.as_user(alice, "GET", "/v1/datasets/photo-labels").json()
    assert entry["owner"] == {"user": alice.name}
    photos = daemon.as_user(alice, "GET", "/v1/datasets/photos").json()
    assert [v["tree_id"] for v in photos["versions"]] == [tree]  # the input untouched


def test_a_group_session_takes_members_labels(annotating, make_user) -> None:
    daemon, alice, bob, _tree = annotating
    carol = make_user()
    assert daemon.admin("user", "add", carol.name).returncode == 0
    assert daemon.admin("group", "add", "lab").returncode == 0
    for user in (alice, carol):
        assert daemon.admin("group", "add-member", "lab", user.name).returncode == 0
    # The dataset is shared with the group: its members may label it.
    assert daemon.as_user(alice, "PUT", "/v1/datasets/photos/sharing",
                          {"groups": ["lab"]}).status == 200
    name = started(daemon, alice, to="lab-labels", group="lab", name="lab-session", gpus=1)
    assert name == "lab-session"
    shown = daemon.as_user(alice, "GET", f"/v1/services/{name}").json()
    assert len(shown["replica_info"][0]["gpus"]) == 1, shown  # asked for: held like a job's
    made = daemon.as_user(carol, "POST", app(name, "label"), {"item": "b.txt", "label": "dog"})
    assert made.status == 200, made.body
    assert daemon.as_user(bob, "GET", app(name, "items")).status in (403, 404)
    listed = daemon.as_user(carol, "GET", "/v1/services").json()["services"]
    assert [(s["name"], s["kind"]) for s in listed] == [(name, "annotator")]
    # A member of the owning group may stop it (a writer of the service).
    assert daemon.as_user(carol, "DELETE", f"/v1/services/{name}").status == 200
    info = saved(daemon, alice, name)
    assert info["saved"] == "lab-labels@1", info
    assert labels_of(daemon, carol, "lab-labels@1") == [("b.txt", "dog", carol.name)]
    entry = daemon.as_user(carol, "GET", "/v1/datasets/lab-labels").json()
    assert entry["owner"] == {"group": "lab"}
    lineage = entry["versions"][0]["metadata"]["lineage"]
    assert lineage["labelled_by"] == [carol.name]


def test_a_session_outlives_a_killed_daemon_and_keeps_its_labels(annotating) -> None:
    daemon, alice, _bob, _tree = annotating
    name = started(daemon, alice, to="kept")
    assert daemon.as_user(alice, "POST", app(name, "label"),
                          {"item": "a.txt", "label": "cat"}).status == 200
    pid = daemon.as_user(alice, "GET", f"/v1/services/{name}").json()["replica_info"][0]["pid"]
    daemon.stop(signal.SIGKILL)
    daemon.start()  # the replica is adopted again, its labels where they were

    def again() -> dict | None:
        answer = daemon.as_user(alice, "POST", app(name, "label"),
                                {"item": "b.txt", "label": "dog"})
        return answer.json() if answer.status == 200 else None
    assert wait_for(again, timeout=60, what="the session after the restart")["labelled"] == 2
    shown = daemon.as_user(alice, "GET", f"/v1/services/{name}").json()
    assert shown["replica_info"][0]["pid"] == pid, shown
    assert daemon.as_user(alice, "DELETE", f"/v1/services/{name}").status == 200
    assert saved(daemon, alice, name)["saved"] == "kept@1"
    assert labels_of(daemon, alice, "kept@1") == [("a.txt", "cat", alice.name),
                                                  ("b.txt", "dog", alice.name)]
