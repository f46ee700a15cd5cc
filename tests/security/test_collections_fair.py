"""One user's job outputs that are slow to collect never hold up another user's jobs.

A job's outputs are read by a helper running as its owner, who may stop it (SIGSTOP,
as any process of theirs). With two collection threads shared by everyone, mallory
stopping the readers of two of her jobs held every other user's ended jobs "running",
outputs uncollected, until the collect timeout (an hour by default). Collections now
run in lanes per user (host/lanes.py): hers wait on her own readers alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from nai_server.testing import wait_for
from tests.integration.conftest import Daemon, UnixUser

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")

# Run as mallory: stop `argv[1]` output readers of hers as they start; say their pids.
# The stderr taggers of her jobs are forked by the same server: they are all running
# before this starts, and are left alone.
STOPPER = """\
import os, signal, sys, time
me, want, deadline = os.getuid(), int(sys.argv[1]), time.monotonic() + 120

def mine():
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == me:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
                if b"output_forks" in cmd or b"output_walk" in cmd:
                    yield int(pid)
        except OSError:
            continue

taggers, stopped = set(mine()), set()
print("ready", flush=True)
while time.monotonic() < deadline and len(stopped) < want:
    for pid in set(mine()) - taggers - stopped:
        os.kill(pid, signal.SIGSTOP)
        stopped.add(pid)
        print(pid, flush=True)
"""
# Waits for the test's word, then writes many files: its reader lists them long
# enough to be caught.
FILES = ("while [ ! -e {gate} ]; do sleep 0.05; done; "
         "python3 -c 'import os\nfor i in range(4000):\n"
         "    open(os.path.join(os.environ[\"NAI_OUTPUT_DIR\"], f\"f{{i}}\"), \"w\").write(\"x\")'")


def submit(daemon: Daemon, user: UnixUser, command: str) -> int:
    made = daemon.as_user(user, "POST", "/v1/jobs", {"spec": {"command": command,
                                                               "gpus": 0}})
    assert made.status == 201, made.body
    return int(made.json()["id"])


def test_a_users_stopped_output_readers_hold_up_no_other_users_jobs(
        daemon_factory, make_user) -> None:
    daemon: Daemon = daemon_factory()
    daemon.start()
    alice, mallory = make_user(), make_user()
    for user in (alice, mallory):
        assert daemon.admin("user", "add", user.name).returncode == 0
    gates = tempfile.mkdtemp()
    os.chmod(gates, 0o755)
    gate = os.path.join(gates, "go")
    hers = [submit(daemon, mallory, FILES.format(gate=gate)) for _ in range(2)]
    wait_for(lambda: all(daemon.as_user(mallory, "GET", f"/v1/jobs/{job}").json()["state"]
                         == "running" for job in hers), timeout=60, what="her jobs running")
    stopper = subprocess.Popen([sys.executable, "-c", STOPPER, "2"], user=mallory.uid,
                               group=mallory.gid, extra_groups=[], stdout=subprocess.PIPE,
                               text=True)
    stopped: list[int] = []
    try:
        assert stopper.stdout is not None and stopper.stdout.readline() == "ready\n"
        open(gate, "w").close()
        said, _ = stopper.communicate(timeout=90)
        stopped = [int(pid) for pid in said.split()]
        assert len(stopped) == 2, said
        mine = submit(daemon, alice, 'echo done > "$NAI_OUTPUT_DIR/out.txt"')

        def ended() -> dict | None:
            info = daemon.as_user(alice, "GET", f"/v1/jobs/{mine}").json()
            return info if info["state"] == "succeeded" else None
        assert wait_for(ended, timeout=60, what="alice's job collected")["output_tree"]
        for job in hers:  # hers wait on her own readers
            assert daemon.as_user(mallory, "GET", f"/v1/jobs/{job}").json()["state"] == \
                "running"
    finally:
        stopper.kill()
        stopper.wait()
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        shutil.rmtree(gates)
