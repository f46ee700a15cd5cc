"""End to end as people use it: two real unix users run the `nai` CLI on their side,
reaching the real daemon through a real sshd on loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from conftest import BIN, Daemon, Sshd, UnixUser, needs_root  # type: ignore[import-not-found]

pytestmark = [needs_root]
EXAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "numpy-regression"


def setup_client(user: UnixUser, sshd: Sshd) -> None:
    """The user's own machine, as far as nai cares: ~/.ssh/config with an alias."""
    key = sshd.authorize(user)
    ssh_dir = user.home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(key, ssh_dir / "id_nai")
    (ssh_dir / "config").write_text(
        f"Host gpu\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {user.name}\n"
        f"  IdentityFile ~/.ssh/id_nai\n")
    shutil.copytree(EXAMPLE, user.home / "proj")
    for path in [user.home, *user.home.rglob("*")]:
        os.chown(path, user.uid, user.gid, follow_symlinks=False)
    (ssh_dir / "id_nai").chmod(0o600)


def nai(user: UnixUser, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(user.home), "USER": user.name, "PATH": f"{BIN}:/usr/bin:/bin",
           "LANG": "C.UTF-8"}
    if "PYTHONPATH" in os.environ:  # the code under test, where it is not the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run([str(BIN / "nai"), *args], user=user.uid, group=user.gid,
                          extra_groups=[], env=env, cwd=cwd or user.home,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def test_submit_follow_pull_over_ssh_as_two_users(daemon: Daemon, sshd: Sshd,
                                                   make_user) -> None:
    alice, bob = make_user(), make_user()
    relay = f"nai-server dial-stdio --socket {daemon.socket}"
    for user in (alice, bob):
        setup_client(user, sshd)
        assert nai(user, "server", "add", "lab", "gpu", "--remote-command", relay).returncode == 0

    # First contact: the host key is unknown and nai says how to trust it (exit 4).
    first = nai(alice, "whoami")
    assert first.returncode == 4 and first.stdout == ""
    assert "SHA256:" in first.stderr and "nai server trust lab" in first.stderr
    # Without a terminal to ask at, trusting needs the fingerprint (or --yes).
    assert nai(alice, "server", "trust", "lab").returncode == 1
    shown = re.search(r"SHA256:[A-Za-z0-9+/]+", first.stderr)
    assert shown is not None
    assert nai(alice, "server", "trust", "lab", "--fingerprint", shown.group()).returncode == 0
    assert nai(bob, "server", "trust", "lab", "--yes").returncode == 0

    # Not registered yet: the server says who to ask.
    refused = nai(alice, "whoami")
    assert refused.returncode == 4 and "nai-admin user add" in refused.stderr
    for user in (alice, bob):
        assert daemon.admin("user", "add", user.name).returncode == 0
    me = json.loads(nai(alice, "whoami", "--json").stdout)
    assert me["user"] == alice.name and me["admin"] is False

    run = nai(alice, "submit", "proj", "--follow", "--env", "SEED=5")
    assert run.returncode == 0, run.stderr
    job_id = int(re.findall(r"submitted job (\d+) ", run.stderr)[0])
    assert "done: val_acc" in run.stdout and f"submitted job {job_id}" in run.stderr

    pulled = nai(alice, "pull", str(job_id), "--to", "out", "--json")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["downloaded"] == 3  # with the predict.py it serves with
    server_out = daemon.state / "jobs" / str(job_id) / "output"
    for name in ("weights.npz", "summary.json", "predict.py"):
        assert (alice.home / "out" / name).read_bytes() == (server_out / name).read_bytes()
        assert (alice.home / "out" / name).stat().st_uid == alice.uid
    again = json.loads(nai(alice, "pull", str(job_id), "--to", "out", "--json").stdout)
    assert again["downloaded"] == 0 and again["skipped"] == 3

    # Bob sees the job in the queue, but not its logs or outputs, and cannot cancel it.
    listing = json.loads(nai(bob, "jobs", "--json").stdout)
    assert [(j["id"], j["user"]) for j in listing] == [(job_id, alice.name)]
    assert listing[0]["output_tree"] is None
    for args in (("logs", str(job_id)), ("pull", str(job_id)), ("metrics", str(job_id))):
        denied = nai(bob, *args)
        assert denied.returncode == 4 and "only they" in denied.stderr, args
        assert denied.stdout == ""
    assert nai(bob, "jobs", "--mine", "--json").stdout.strip() == "[]"
    metrics = json.loads(nai(alice, "metrics", str(job_id), "--json").stdout)
    assert metrics[-1]["step"] == 40


def test_openssh_transport_end_to_end(daemon: Daemon, sshd: Sshd, make_user) -> None:
    alice = make_user()
    setup_client(alice, sshd)
    sshd.write_known_hosts(alice.home / ".ssh" / "known_hosts")
    os.chown(alice.home / ".ssh" / "known_hosts", alice.uid, alice.gid)
    daemon.admin("user", "add", alice.name)
    assert nai(alice, "server", "add", "lab", "gpu", "--transport", "openssh",
               "--remote-command", f"nai-server dial-stdio --socket {daemon.socket}"
               ).returncode == 0
    run = nai(alice, "submit", "proj", "--command", "echo via openssh; exit 7", "--follow")
    assert run.returncode == 7 and "via openssh" in run.stdout, run.stderr
