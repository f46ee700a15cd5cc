"""What a caller sends to start an annotate session is checked before anything of it
stays: options are bounded like a job's environment, and a start refused (here, an
option the store cannot hold) leaves no labels folder behind.

An annotator's (and a dataset processor's) options are bounded like a job's environment.

The options a caller sends go into the session's document twice (its annotation and
its replica's environment, `ANNOTATOR_OPTIONS`) and into the lineage of the version its
labels become; a job's `env` is capped (32 KiB a value), but the options were bounded
only by the 1 MiB request: ~2 MiB in the hot store per session, written whole at every
commit, for every user, and a value the kernel refuses to exec (128 KiB at most).
"""

from __future__ import annotations

import os

import pytest

from nai_server.testing import upload_tree
from nai_server.testing.plugin_dist import labels_site
from tests.integration.conftest import Daemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")


def test_huge_options_are_refused(daemon_factory, make_user, request: pytest.FixtureRequest,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    labels_site(request, monkeypatch, "labels", "1.0")
    daemon: Daemon = daemon_factory(plugins={"labels": {}})
    daemon.start()
    mallory = make_user()
    assert daemon.admin("user", "add", mallory.name).returncode == 0
    with daemon.client() as root:
        made = root.post("/v1/datasets", json={"name": "photos", "shared": True,
                                               "tree_id": upload_tree(root, {"a.txt": b"a"})})
        assert made.status_code == 201, made.text
    options = {f"k{i}": "x" * 30_000 for i in range(30)}  # ~900 KB, under the body cap
    refused = daemon.as_user(mallory, "POST", "/v1/datasets/photos/annotate",
                             {"plugin": "labels", "name": "big", "to": "mine",
                              "options": options})
    assert refused.status == 400 and b"options" in refused.body, refused.body[:300]
    listed = daemon.as_user(mallory, "GET", "/v1/services").json()["services"]
    assert listed == []
    # Options of a sensible size still go through.
    made = daemon.as_user(mallory, "POST", "/v1/datasets/photos/annotate",
                          {"plugin": "labels", "name": "ok", "to": "mine",
                           "options": {"classes": "a,b"}})
    assert made.status == 201, made.body
    assert daemon.as_user(mallory, "DELETE", "/v1/services/ok").status == 200


def test_a_refused_start_leaves_no_folder(daemon_factory, make_user,
                                          request: pytest.FixtureRequest,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # The folder is made (and given to the user) before the session's document is
    # committed: a commit refused left it, the user's, in the daemon's state for good,
    # as many as they liked, counted nowhere.
    labels_site(request, monkeypatch, "labels", "1.0")
    daemon: Daemon = daemon_factory(plugins={"labels": {}})
    daemon.start()
    mallory = make_user()
    assert daemon.admin("user", "add", mallory.name).returncode == 0
    with daemon.client() as root:
        made = root.post("/v1/datasets", json={"name": "photos", "shared": True,
                                               "tree_id": upload_tree(root, {"a.txt": b"a"})})
        assert made.status_code == 201, made.text
    for i in range(3):
        refused = daemon.as_user(mallory, "POST", "/v1/datasets/photos/annotate",
                                 {"plugin": "labels", "name": f"s{i}", "to": "mine",
                                  "options": {"note": "\ud800"}})  # a lone surrogate
        assert refused.status == 400, refused.body
    assert daemon.as_user(mallory, "GET", "/v1/services").json()["services"] == []
    assert list((daemon.state / "annotations").iterdir()) == []
