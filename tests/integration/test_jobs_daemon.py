"""Jobs through the real daemon: run as their real unix owners, survive SIGKILL of
the daemon, follow logs over the socket, and `run --burst`."""

from __future__ import annotations

import os
import signal
import stat
import struct
import subprocess
import time

from conftest import BIN, Daemon, needs_root, wait_for  # type: ignore[import-not-found]

from nai_server.protocol import TERMINAL_STATES

pytestmark = [needs_root]
TERMINAL = TERMINAL_STATES


def job_state(daemon: Daemon, job_id: int, user=None) -> str:
    return daemon.as_user(user, "GET", f"/v1/jobs/{job_id}").json()["state"]


def test_jobs_run_as_their_owner_and_stay_private(daemon: Daemon, make_user) -> None:
    alice, bob = make_user(), make_user()
    for u in (alice, bob):
        assert daemon.admin("user", "add", u.name).returncode == 0
    cmd = ('id -u > "$NAI_OUTPUT_DIR/uid"; id -G > "$NAI_OUTPUT_DIR/groups"; '
           'echo secret > "$NAI_OUTPUT_DIR/weights.txt"; pwd')
    a_job = daemon.as_user(alice, "POST", "/v1/jobs",
                           {"spec": {"command": cmd, "gpus": 1}}).json()["id"]
    b_job = daemon.as_user(bob, "POST", "/v1/jobs",
                           {"spec": {"command": f"cat {daemon.state}/jobs/{a_job}/output/"
                                     f"weights.txt; ls {daemon.state}/jobs", "gpus": 0,
                                     "after": [a_job]}}).json()["id"]
    wait_for(lambda: job_state(daemon, b_job, bob) in TERMINAL, what="both jobs")
    a_dir = daemon.state / "jobs" / str(a_job)
    assert job_state(daemon, a_job, alice) == "succeeded"
    assert (a_dir / "output" / "uid").read_text().strip() == str(alice.uid)
    # The directory is the daemon's: alice owns what is in it, and can replace none of it;
    # its ACL lets her alone pass through (the mask, --x, shows as the group's bits).
    assert a_dir.stat().st_uid == 0 and stat.S_IMODE(a_dir.stat().st_mode) == 0o710
    acl = os.getxattr(a_dir, "system.posix_acl_access")
    entries = {struct.unpack_from("<HHI", acl, 4 + 8 * i) for i in range((len(acl) - 4) // 8)}
    assert (0x02, 1, alice.uid) in entries and (0x20, 0, 0xFFFFFFFF) in entries, entries
    for path in (a_dir / "log", a_dir / "output" / "weights.txt", a_dir / "code",
                 a_dir / "metrics.jsonl"):
        assert path.stat().st_uid == alice.uid, path
    # Bob's job, running as bob, could read neither alice's job dir nor the jobs list.
    assert job_state(daemon, b_job, bob) == "failed"
    b_log = daemon.as_user(bob, "GET", f"/v1/jobs/{b_job}/logs").body.decode()
    assert "Permission denied" in b_log and "secret" not in b_log
    # Through the API bob sees alice's job but not its logs or outputs.
    seen = daemon.as_user(bob, "GET", f"/v1/jobs/{a_job}").json()
    assert seen["user"] == alice.name and seen["output_tree"] is None
    assert daemon.as_user(bob, "GET", f"/v1/jobs/{a_job}/logs").status == 403
    assert daemon.as_user(bob, "GET", f"/v1/jobs/{a_job}/outputs").status == 403
    assert daemon.as_user(bob, "DELETE", f"/v1/jobs/{a_job}").status == 403
    out = daemon.as_user(alice, "GET", f"/v1/jobs/{a_job}/outputs/file?path=weights.txt")
    assert out.status == 200 and out.body == b"secret\n"


def test_daemon_sigkill_with_jobs_running(daemon: Daemon, make_user) -> None:
    alice = make_user()
    daemon.admin("user", "add", alice.name)
    gate = daemon.root / "go"
    spec = {"command": f"echo started; while [ ! -e {gate} ]; do sleep 0.05; done; echo end",
            "gpus": 1}
    ids = [daemon.as_user(alice, "POST", "/v1/jobs", {"spec": spec}).json()["id"]
           for _ in range(3)]
    wait_for(lambda: [job_state(daemon, i, alice) for i in ids] == ["running", "running",
                                                                    "queued"],
             what="two running, one queued")
    pids = {i: daemon.client().get(f"/v1/jobs/{i}").json() for i in ids}
    assert len({tuple(p["gpus"]) for p in pids.values() if p["gpus"]}) == 2

    daemon.stop(signal.SIGKILL)
    daemon.start()
    assert [job_state(daemon, i, alice) for i in ids][:2] == ["running", "running"]
    os.mknod(gate)
    wait_for(lambda: all(job_state(daemon, i, alice) in TERMINAL for i in ids),
             what="all jobs to end after the restart")
    for i in ids:
        assert job_state(daemon, i, alice) == "succeeded"
        log = daemon.as_user(alice, "GET", f"/v1/jobs/{i}/logs").body
        assert log.count(b"started") == 1 and log.endswith(b"end\n")  # started once only


def test_follow_logs_over_the_socket(daemon: Daemon) -> None:
    spec = {"command": "for i in 1 2 3; do echo line $i; sleep 0.2; done", "gpus": 0}
    job = daemon.client().post("/v1/jobs", json={"spec": spec}).json()["id"]
    with daemon.client() as client, client.stream(
            "GET", f"/v1/jobs/{job}/logs", params={"follow": "true"}) as response:
        assert response.status_code == 200
        text = b"".join(response.iter_bytes()).decode()
    assert text == "line 1\nline 2\nline 3\n"
    assert job_state(daemon, job) == "succeeded"


def test_burst_mode_exits_when_idle(daemon_factory) -> None:
    d = daemon_factory(mode="personal")
    d.start()
    d.client().post("/v1/jobs", json={"spec": {"command": "sleep 0.3", "gpus": 1}})
    d.stop()
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "nai-server"), "run", "--burst", "--config",
                           str(d.config_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "nothing queued or running" in proc.stderr and time.monotonic() - start < 30
