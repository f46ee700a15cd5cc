"""One user's annotate session that is slow to save never holds up another's.

A session's labels are read by a helper running as its user: that user may stop it
(SIGSTOP, as any process of theirs), or fill the folder so that reading it takes long.
Saved one session at a time, mallory's stopped reader held every other user's labels
unsaved (their sessions stuck "stopping") until the collect timeout, an hour by
default; each of her sessions added another. Saves now run one at a time per user.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest

from nai_server.testing import upload_tree, wait_for
from nai_server.testing.plugin_dist import labels_site
from tests.integration.conftest import Daemon, UnixUser

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")

# Run as mallory: stop the first reader of hers that starts, say its pid.
STOPPER = """\
import os, signal, time
me, deadline = os.getuid(), time.monotonic() + 120
while time.monotonic() < deadline:
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != me:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"output_walk" in cmd:
            os.kill(int(pid), signal.SIGSTOP)
            print(pid, flush=True)
            raise SystemExit(0)
"""


def as_user(user: UnixUser, code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], user=user.uid,
                            group=user.gid, extra_groups=[], stdout=subprocess.PIPE,
                            text=True)


def start(daemon: Daemon, user: UnixUser, name: str) -> None:
    made = daemon.as_user(user, "POST", "/v1/datasets/photos/annotate",
                          {"plugin": "labels", "options": {"classes": "a,b"}, "name": name,
                           "to": f"{name}-labels"})
    assert made.status == 201, made.body
    wait_for(lambda: daemon.as_user(user, "GET", f"/v1/services/{name}/invoke/items").status
             == 200, timeout=60, what=f"session {name}'s app")


def test_a_stalled_save_holds_up_no_other_users(daemon_factory, make_user,
                                                request: pytest.FixtureRequest,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    labels_site(request, monkeypatch, "labels", "1.0")
    daemon: Daemon = daemon_factory(plugins={"labels": {}})
    daemon.start()
    alice, mallory = make_user(), make_user()
    for user in (alice, mallory):
        assert daemon.admin("user", "add", user.name).returncode == 0
    with daemon.client() as root:
        made = root.post("/v1/datasets", json={"name": "photos", "shared": True,
                                               "tree_id": upload_tree(root, {"a.txt": b"a"})})
        assert made.status_code == 201, made.text
    start(daemon, mallory, "m1")
    start(daemon, alice, "a1")
    assert daemon.as_user(alice, "POST", "/v1/services/a1/invoke/label",
                          {"item": "a.txt", "label": "a"}).status == 200
    # mallory's folder takes a while to list; her stopper catches its reader.
    (folder,) = [p for p in (daemon.state / "annotations").glob("*/labels")
                 if p.stat().st_uid == mallory.uid]
    filler = as_user(mallory, "import os, sys\nfor i in range(5000):\n"
                              "    open(os.path.join(sys.argv[1], f'f{i}'), 'w').write('x')\n",
                     str(folder))
    assert filler.wait(60) == 0
    stopper = as_user(mallory, STOPPER)
    stopped = None
    try:
        assert daemon.as_user(mallory, "DELETE", "/v1/services/m1").status == 200
        said, _ = stopper.communicate(timeout=60)
        stopped = int(said)
        assert daemon.as_user(alice, "DELETE", "/v1/services/a1").status == 200

        def saved() -> dict | None:
            info = daemon.as_user(alice, "GET", "/v1/services/a1").json()
            return info if info.get("saved") else None
        assert wait_for(saved, timeout=60, what="alice's labels saved")["saved"] == \
            "a1-labels@1"
        mine = daemon.as_user(mallory, "GET", "/v1/services/m1").json()
        assert not mine.get("saved"), mine  # hers waits on her own reader
        # Nor does her reader hold up the daemon's stopping (within the 20 s it is
        # given before SIGKILL, whose exit status is -9).
        assert daemon.stop() == 0, daemon.log()[-3000:]
    finally:
        stopper.kill()
        stopper.wait()
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):  # (killed by the daemon's stop)
                os.kill(stopped, signal.SIGCONT)
        if daemon.answers():
            for user, name in ((alice, "a1"), (mallory, "m1")):
                daemon.as_user(user, "DELETE", f"/v1/services/{name}")
