"""Annotators (`nai dataset annotate`) through the real daemon, as real non-root unix
users: the `labels` app runs as its owner's job on a 0600 socket of theirs, the daemon
relays to it only for those who may read the job, who is labelling comes from the
connection (not from what the caller claims), and once the job is finished its labels
are the dataset's next version, with lineage naming the input and the annotator. A
cancelled annotate job keeps the labels made so far: they are saved as the next version
all the same."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]
from test_registry_access import Actor, upload_tree  # type: ignore[import-not-found]

from nai_server.core.processing import APP_DIR, APP_SOCKET
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing.plugin_dist import write_dist

pytestmark = [needs_root]

DATA = {"a.txt": b"a cat sat\n", "b.txt": b"a dog ran\n", "img/c.png": b"\x89PNG fake"}


@pytest.fixture
def annotating(daemon_factory, make_user, request: pytest.FixtureRequest,
               monkeypatch: pytest.MonkeyPatch):
    # The labels annotator as pip would install it, where users' jobs can read it.
    site = write_dist(Path(tempfile.mkdtemp(prefix="nai-site-")), "nai-labels", "1.2.0", {},
                      {"nai.annotators": {"labels2": "nai_plugins.labels"}})
    request.addfinalizer(lambda: shutil.rmtree(site, ignore_errors=True))
    monkeypatch.setenv("PYTHONPATH", f"{site}:{os.environ.get('PYTHONPATH', '')}")
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


def started(daemon: Daemon, user, **body) -> int:
    made = daemon.as_user(user, "POST", "/v1/datasets/photos/annotate",
                          {"plugin": "labels2", "options": {"classes": "cat,dog"}, **body})
    assert made.status == 201, made.body
    job_id = int(made.json()["id"])

    def up() -> bool:
        return daemon.as_user(user, "GET", f"/v1/jobs/{job_id}/app/items").status == 200
    wait_for(up, timeout=60, what=f"job {job_id}'s app")
    return job_id


def ended(daemon: Daemon, user, job_id: int) -> dict:
    def done() -> dict | None:
        info = daemon.as_user(user, "GET", f"/v1/jobs/{job_id}").json()
        return info if info["state"] in TERMINAL_STATES else None
    return wait_for(done, timeout=60, what=f"job {job_id} to end")


def test_labels_made_through_the_daemon_become_the_next_version(annotating) -> None:
    daemon, alice, bob, tree = annotating
    job_id = started(daemon, alice)
    app = f"/v1/jobs/{job_id}/app"

    sock = daemon.state / "jobs" / str(job_id) / APP_DIR / APP_SOCKET
    st = os.lstat(sock)
    assert stat.S_ISSOCK(st.st_mode) and st.st_uid == alice.uid
    assert stat.S_IMODE(st.st_mode) == 0o600

    page = daemon.as_user(alice, "GET", f"{app}/")
    assert page.status == 200 and b"nai labels" in page.body
    assert daemon.as_user(alice, "GET", f"{app}/items").json()["total"] == 3
    # Another user reaches neither the app nor the job's labels.
    for method, path, body in (("GET", f"{app}/items", None),
                               ("POST", f"{app}/label", {"item": "a.txt", "label": "dog"}),
                               ("POST", f"{app}/_nai/finish", None)):
        refused = daemon.as_user(bob, method, path, body)
        assert refused.status in (403, 404), refused.body
    with daemon.client() as root:  # an admin may read any job, its app too
        assert root.get(f"{app}/items").status_code == 200
    # Who labels is the connection's user, whatever the request claims.
    made = daemon.as_user(alice, "POST", f"{app}/label", {"item": "a.txt", "label": "cat"},
                          headers={"X-Nai-User": "mallory"})
    assert made.status == 200 and made.json()["labelled"] == 1, made.body
    made = daemon.as_user(alice, "POST", f"{app}/label", {"item": "img/c.png", "label": "dog"})
    assert made.json()["labelled"] == 2
    assert daemon.as_user(alice, "GET", f"{app}/file/img/c.png").body == DATA["img/c.png"]

    assert daemon.as_user(alice, "POST", f"{app}/_nai/finish").status == 200
    info = ended(daemon, alice, job_id)
    assert info["state"] == "succeeded" and info["registered"] == "photos@2", info
    entry = daemon.as_user(alice, "GET", "/v1/datasets/photos").json()
    v1, v2 = entry["versions"]
    assert v1["tree_id"] == tree  # the input is untouched
    lineage = v2["metadata"]["lineage"]
    assert lineage["datasets"] == ["photos@1"] and lineage["job"] == job_id
    assert lineage["annotator"] == {"plugin": "labels2", "version": "1.2.0",
                                    "options": {"classes": "cat,dog"}}
    got = daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}/outputs/file?path=labels.jsonl")
    rows = [json.loads(line) for line in got.body.decode().splitlines()]
    assert [(r["item"], r["label"], r["by"]) for r in rows] == [
        ("a.txt", "cat", alice.name), ("img/c.png", "dog", alice.name)]
    assert v2["files"] == len(DATA) + 1  # the input's files and the labels
    # Once ended, the app is gone: 503, never a hang.
    assert daemon.as_user(alice, "GET", f"{app}/items").status == 503


def test_a_cancelled_session_keeps_its_labels_as_the_next_version(annotating) -> None:
    daemon, alice, _bob, tree = annotating
    job_id = started(daemon, alice, to="photo-labels")
    made = daemon.as_user(alice, "POST", f"/v1/jobs/{job_id}/app/label",
                          {"item": "b.txt", "label": "dog"})
    assert made.status == 200
    assert daemon.as_user(alice, "DELETE", f"/v1/jobs/{job_id}").status == 200
    info = ended(daemon, alice, job_id)
    # The job says it was cancelled, and the labels made so far are saved all the same.
    assert info["state"] == "cancelled" and info["registered"] == "photo-labels@1", info
    entry = daemon.as_user(alice, "GET", "/v1/datasets/photo-labels").json()
    (v1,) = entry["versions"]
    assert v1["metadata"]["lineage"]["datasets"] == ["photos@1"]
    assert v1["metadata"]["lineage"]["annotator"]["plugin"] == "labels2"
    got = daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}/outputs/file?path=labels.jsonl")
    row = json.loads(got.body)
    assert (row["item"], row["label"], row["by"]) == ("b.txt", "dog", alice.name)
    photos = daemon.as_user(alice, "GET", "/v1/datasets/photos").json()
    assert [v["tree_id"] for v in photos["versions"]] == [tree]  # the input untouched


def test_a_group_session_takes_members_labels_and_saves_before_its_time_limit(
        annotating, make_user) -> None:
    daemon, alice, _bob, _tree = annotating
    carol = make_user()
    assert daemon.admin("user", "add", carol.name).returncode == 0
    assert daemon.admin("group", "add", "lab").returncode == 0
    for user in (alice, carol):
        assert daemon.admin("group", "add-member", "lab", user.name).returncode == 0
    job_id = started(daemon, alice, to="lab-labels", group="lab", time_limit="30s")
    made = daemon.as_user(carol, "POST", f"/v1/jobs/{job_id}/app/label",
                          {"item": "b.txt", "label": "dog"})
    assert made.status == 200, made.body
    # Nobody finishes it: it ends itself before the time limit, keeping the labels.
    info = ended(daemon, alice, job_id)
    assert info["state"] == "succeeded" and info["registered"] == "lab-labels@1", info
    got = daemon.as_user(carol, "GET", f"/v1/jobs/{job_id}/outputs/file?path=labels.jsonl")
    row = json.loads(got.body)
    assert (row["item"], row["label"], row["by"]) == ("b.txt", "dog", carol.name)
    entry = daemon.as_user(carol, "GET", "/v1/datasets/lab-labels").json()
    assert entry["owner"] == {"group": "lab"}
