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
# then lets them all go on. With "kill", it also kills each new tagger of theirs it sees.
STOPPER = r"""
import os, signal, sys, time
go, done, kill = sys.argv[1], sys.argv[2], sys.argv[3:] == ["kill"]
me, killed = str(os.getuid()), set()
while not os.path.exists(go):
    time.sleep(0.02)
print("stopping", flush=True)
while not os.path.exists(done):
    for _ in range(50 if kill else 500):
        try:
            os.kill(-1, signal.SIGSTOP)
        except OSError:
            pass
    for pid in os.listdir("/proc") if kill else ():
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read() == "nai-stderr-tag\n" and pid not in killed:
                    os.kill(int(pid), signal.SIGKILL)
                    killed.add(pid)
        except (OSError, ValueError):
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


def launched_while_stopping(daemon_factory: Any, make_user: Any,
                            *how: str) -> tuple[Daemon, UnixUser, list[int]]:
    """LAUNCHES jobs of alice's, launched while her stopper runs (with `how`), ended."""
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
                                    f"{gates['go']} {gates['done']} {' '.join(how)}")
    wait_for(lambda: all(state(daemon, j) == "running" for j in (*holders, stopper)),
             what="every slot to be taken")
    jobs = [submit(daemon, alice, f"echo out{n}; echo err{n} >&2") for n in range(LAUNCHES)]
    try:
        gates["go"].touch()
        log = daemon.state / "jobs" / str(stopper) / "log"
        wait_for(lambda: b"stopping" in log.read_bytes(), what="the stopper to start")
        gates["hold"].touch()  # bob's slots free: alice's jobs start
        for job in jobs:  # as root: alice's own relay would be stopped too
            wait_for(lambda job=job: state(daemon, job) not in ("queued", "starting"),
                     what=f"job {job} to be launched")
    finally:
        gates["hold"].touch()
        gates["done"].touch()
    for job in jobs:
        ended(daemon, alice, job)
    return daemon, alice, jobs


def test_an_owner_who_stops_their_processes_cannot_stall_a_launch(
        daemon_factory: Any, make_user: Any) -> None:
    daemon, alice, jobs = launched_while_stopping(daemon_factory, make_user)
    for n, job in enumerate(jobs):
        assert daemon.as_user(alice, "GET", f"/v1/jobs/{job}").json()["state"] == "succeeded"
        assert streams(piece(daemon, alice, job)) == (f"out{n}\n".encode(),
                                                      f"err{n}\n".encode())


def test_an_owner_who_kills_their_new_taggers_cannot_stall_a_launch(
        daemon_factory: Any, make_user: Any) -> None:
    """A tagger gone before the daemon moves it into the job's cgroup: the job starts
    all the same (its stderr is then lost, as when its owner kills it later)."""
    daemon, alice, jobs = launched_while_stopping(daemon_factory, make_user, "kill")
    for job in jobs:
        info = daemon.as_user(alice, "GET", f"/v1/jobs/{job}").json()
        assert "could not start" not in (info.get("message") or ""), info


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
