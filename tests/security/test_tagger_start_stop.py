"""A job's tagger runs as its owner, who may signal it: stopped (SIGSTOP) before it says
it reads, it would hold the daemon's launch of the job, under the daemon's lock, for the
whole wait for it (seconds a job, for every job of theirs). Through the real daemon
(root) as real unix users: a job of alice's that stops every process of hers, over and
over, while another of her jobs starts, neither holds that launch nor loses the new
job's stderr marks: the tagger has said it reads before it is hers to stop."""

from __future__ import annotations

import subprocess
from typing import Any

from conftest import Daemon, UnixUser  # type: ignore[import-not-found]

from nai_server.host import output_helpers
from nai_server.testing import wait_for
from tests.security.test_stderr_marks_attacks import ended, piece, streams

# Stops every process of its owner (but itself) as fast as it can, till told to stop;
# then lets them all go on.
STOPPER = r"""
import os, signal, sys, time
go, done = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.02)
print("stopping", flush=True)
while not os.path.exists(done):
    for _ in range(500):
        try:
            os.kill(-1, signal.SIGSTOP)
        except OSError:
            pass
os.kill(-1, signal.SIGCONT)
"""
LAUNCHES = 6  # each a chance for the stopper to catch a tagger before it says it reads


def submit(daemon: Daemon, user: UnixUser, command: str) -> int:
    made = daemon.as_user(user, "POST", "/v1/jobs", {"spec": {"command": command, "gpus": 0}})
    assert made.status == 201, made.json()
    return int(made.json()["id"])


def state(daemon: Daemon, job_id: int) -> str:
    """As root (an admin): alice's own relay would be stopped with her other processes."""
    with daemon.client() as client:
        return str(client.get(f"/v1/jobs/{job_id}").json()["state"])


def test_an_owner_who_stops_their_processes_cannot_stall_a_launch(
        daemon_factory: Any, make_user: Any) -> None:
    daemon = daemon_factory(scheduler={"cpu_slots": 1 + LAUNCHES})
    daemon.start()
    alice, bob = make_user(), make_user()
    for user in (alice, bob):
        assert daemon.admin("user", "add", user.name).returncode == 0
    gates = {name: daemon.root / name for name in ("hold", "go", "done")}
    (daemon.root / "stopper.py").write_text(STOPPER)
    # alice's stopper holds one slot, bob the others: her next jobs wait for his.
    holders = [submit(daemon, bob, f"while [ ! -e {gates['hold']} ]; do sleep 0.05; done")
               for _ in range(LAUNCHES)]
    stopper = submit(daemon, alice, f"exec /usr/bin/python3 {daemon.root}/stopper.py "
                                    f"{gates['go']} {gates['done']}")
    wait_for(lambda: all(state(daemon, j) == "running" for j in (*holders, stopper)),
             what="every slot to be taken")
    jobs = [submit(daemon, alice, f"echo out{n}; echo err{n} >&2") for n in range(LAUNCHES)]
    try:
        gates["go"].touch()
        log = daemon.state / "jobs" / str(stopper) / "log"
        wait_for(lambda: b"stopping" in log.read_bytes(), what="the stopper to start")
        gates["hold"].touch()  # bob's slots free: alice's jobs start
        for job in jobs:
            wait_for(lambda job=job: state(daemon, job) not in ("queued", "starting"),
                     what=f"job {job} to be launched")
    finally:
        gates["hold"].touch()
        gates["done"].touch()
    for n, job in enumerate(jobs):
        assert ended(daemon, alice, job)["state"] == "succeeded"
        assert streams(piece(daemon, alice, job)) == (f"out{n}\n".encode(),
                                                      f"err{n}\n".encode())


def test_as_owner_takes_the_owners_ids_groups_and_nothing_of_root(
        make_user: Any, monkeypatch: Any) -> None:
    """Both ways as_owner starts a command (setpriv, or Python where it is missing)."""
    user = make_user()
    show = ["/bin/sh", "-c", "grep -E '^(Uid|Gid|Groups|CapEff):' /proc/self/status"]
    for setpriv in (output_helpers.SETPRIV, None):
        monkeypatch.setattr(output_helpers, "SETPRIV", setpriv)
        for groups in ((), (user.gid, 27)):
            got = subprocess.run(output_helpers.as_owner(show, user.uid, user.gid, groups),
                                 capture_output=True, text=True, check=True).stdout.split("\n")
            assert got[0].split()[1:] == [str(user.uid)] * 4  # real, effective, saved, fs
            assert got[1].split()[1:] == [str(user.gid)] * 4
            assert sorted(got[2].split()[1:]) == sorted(str(g) for g in groups)
            assert got[3].split()[1] == "0" * 16
