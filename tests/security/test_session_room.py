"""A user's annotate sessions waiting to be saved count against
`services.max_services_per_user`, as running ones do.

A stopped session's document is kept until its labels are saved (never expired
before), and its user may hold that off (stopping the reader, a process of theirs,
saves their sessions one after another). Were only running sessions counted, mallory
could start and stop sessions without end, each leaving a document (the store, written
whole at each commit, grows for everyone) and a folder.
"""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from nai_server.testing import upload_tree
from nai_server.testing.plugin_dist import labels_site
from tests.integration.conftest import Daemon
from tests.security.test_session_saves_fair import STOPPER, as_user, start

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")


def test_sessions_waiting_to_be_saved_count_as_running(daemon_factory, make_user,
                                                       request: pytest.FixtureRequest,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    labels_site(request, monkeypatch, "labels", "1.0")
    daemon: Daemon = daemon_factory(plugins={"labels": {}},
                                    services={"max_services_per_user": 1})
    daemon.start()
    mallory = make_user()
    assert daemon.admin("user", "add", mallory.name).returncode == 0
    with daemon.client() as root:
        made = root.post("/v1/datasets", json={"name": "photos", "shared": True,
                                               "tree_id": upload_tree(root, {"a.txt": b"a"})})
        assert made.status_code == 201, made.text
    start(daemon, mallory, "m1")
    stopper = as_user(mallory, STOPPER)
    stopped = None
    try:
        assert daemon.as_user(mallory, "DELETE", "/v1/services/m1").status == 200
        said, _ = stopper.communicate(timeout=60)
        stopped = int(said)  # m1 stays unsaved while its reader is stopped
        refused = daemon.as_user(mallory, "POST", "/v1/datasets/photos/annotate",
                                 {"plugin": "labels", "name": "m2", "to": "m2"})
        assert refused.status == 409 and b"m1" in refused.body, refused.body
    finally:
        stopper.kill()
        stopper.wait()
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        daemon.as_user(mallory, "DELETE", "/v1/services/m2")
