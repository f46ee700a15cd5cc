"""The dataset version a session labels is kept until the session's labels are saved,
not only while it runs: saving names it in the new version's lineage (resolved as the
session's user). Removed by another writer of the dataset between the session's stop
and its save (a save takes as long as reading the folder does), the labels were not
saved at all."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from nai_server.testing import upload_tree, wait_for
from nai_server.testing.plugin_dist import labels_site
from tests.integration.conftest import Daemon
from tests.security.test_session_saves_fair import STOPPER, as_user, start

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")


def test_a_sessions_source_stays_until_its_labels_are_saved(
        daemon_factory, make_user, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    labels_site(request, monkeypatch, "labels", "1.0")
    daemon: Daemon = daemon_factory(plugins={"labels": {}})
    daemon.start()
    alice, bob = make_user(), make_user()
    assert daemon.admin("group", "add", "lab").returncode == 0
    for user in (alice, bob):
        assert daemon.admin("user", "add", user.name).returncode == 0
        assert daemon.admin("group", "add-member", "lab", user.name).returncode == 0
    with daemon.client() as root:
        made = root.post("/v1/datasets", json={"name": "photos", "group": "lab",
                                               "tree_id": upload_tree(root, {"a.txt": b"a"})})
        assert made.status_code == 201, made.text
    start(daemon, alice, "m1")
    assert daemon.as_user(alice, "POST", "/v1/services/m1/invoke/label",
                          {"item": "a.txt", "label": "a"}).status == 200
    # The save is held (here by stopping its reader) while bob tries to remove the source.
    stopper = as_user(alice, STOPPER)
    stopped = None
    try:
        assert daemon.as_user(alice, "DELETE", "/v1/services/m1").status == 200
        said, _ = stopper.communicate(timeout=60)
        stopped = int(said)
        refused = daemon.as_user(bob, "DELETE", "/v1/datasets/photos/versions/1")
        assert refused.status == 409 and b"m1" in refused.body, refused.body
    finally:
        stopper.kill()
        stopper.wait()
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)

    def saved() -> dict | None:
        info = daemon.as_user(alice, "GET", "/v1/services/m1").json()
        return info if info.get("saved") or "not saved" in (info.get("message") or "") \
            else None
    assert wait_for(saved, timeout=60, what="m1 settled")["saved"] == "m1-labels@1"
    # Saved, the version may go.
    assert daemon.as_user(bob, "DELETE", "/v1/datasets/photos/versions/1").status == 200
