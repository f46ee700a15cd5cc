"""The real daemon on a unix socket, reached by real unix users through dial-stdio."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess

from conftest import BIN, Daemon, UnixUser, needs_root  # type: ignore[import-not-found]

pytestmark = [needs_root]


def test_identity_registration_and_admin_rights(daemon: Daemon, make_user) -> None:
    alice: UnixUser = make_user()
    bob: UnixUser = make_user()

    refused = daemon.as_user(alice, "GET", "/v1/me")
    assert refused.status == 403
    assert f"nai-admin user add {alice.name}" in refused.json()["error"]["message"]

    assert daemon.admin("user", "add", alice.name).returncode == 0
    assert daemon.admin("user", "add", bob.name).returncode == 0
    me = daemon.as_user(alice, "GET", "/v1/me").json()
    assert (me["user"], me["uid"], me["admin"]) == (alice.name, alice.uid, False)

    # A registered non-admin may not use admin routes, neither directly nor via nai-admin.
    forbidden = daemon.as_user(bob, "POST", "/v1/groups", {"name": "x"})
    assert forbidden.status == 403 and forbidden.json()["error"]["code"] == "forbidden"
    out = daemon.admin("group", "add", "x", user=bob)
    assert out.returncode == 1 and "not an admin" in out.stderr and out.stdout == ""

    # Membership of the admins group makes an admin.
    assert daemon.admin("group", "add-member", "admins", bob.name).returncode == 0
    assert daemon.as_user(bob, "GET", "/v1/me").json()["admin"] is True
    assert daemon.as_user(bob, "POST", "/v1/groups", {"name": "x"}).status == 201


def test_method_override_and_json_errors_over_the_relay(daemon: Daemon, make_user) -> None:
    alice = make_user()
    daemon.admin("user", "add", alice.name)
    daemon.admin("group", "add", "vision")
    daemon.admin("group", "add-member", "admins", alice.name)
    deleted = daemon.as_user(alice, "POST", "/v1/groups/vision",
                             headers={"X-HTTP-Method-Override": "DELETE"})
    assert deleted.status == 204
    missing = daemon.as_user(alice, "GET", "/v1/groups/vision")
    assert missing.status == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.json()["error"]["code"] == "not_found"
    crash_free = daemon.as_user(alice, "POST", "/v1/users", {"name": 5})
    assert crash_free.status == 400 and "Traceback" not in crash_free.body.decode()


def test_nai_admin_commands(daemon: Daemon, make_user) -> None:
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    dup = daemon.admin("user", "add", alice.name)
    assert dup.returncode == 1 and "already registered" in dup.stderr
    unknown = daemon.admin("user", "show", "nobody-here")
    assert unknown.returncode == 1 and "nai-admin user list" in unknown.stderr
    assert daemon.admin("group", "add", "lab").returncode == 0
    assert daemon.admin("group", "add-member", "lab", alice.name).returncode == 0
    no_group = daemon.admin("group", "add-member", "nolab", alice.name)
    assert no_group.returncode == 1 and "no group named 'nolab'" in no_group.stderr

    users = json.loads(daemon.admin("--json", "user", "list").stdout)
    assert [(u["name"], u["groups"], u["uid"]) for u in users] == [
        (alice.name, ["lab"], alice.uid)]
    groups = json.loads(daemon.admin("group", "list", "--json").stdout)
    assert {g["name"]: g["members"] for g in groups} == {"admins": [], "lab": [alice.name]}

    assert daemon.admin("quota", "set", "--user", alice.name, "--gpus", "2",
                        "--gpu-hours", "50").returncode == 0
    shown = json.loads(daemon.admin("quota", "show", "--user", alice.name, "--json").stdout)
    assert shown == {"max_gpus": 2, "gpu_hours": 50.0, "period_days": 30}
    assert "GPUs at once: 2" in daemon.admin("quota", "show", "--user", alice.name).stdout

    assert "drained" in daemon.admin("drain", "on").stdout
    assert json.loads(daemon.admin("--json", "drain", "status").stdout) == {"drained": True}
    assert daemon.admin("drain", "off").returncode == 0

    assert daemon.admin("user", "remove", alice.name).returncode == 0
    groups = json.loads(daemon.admin("group", "list", "--json").stdout)
    assert {g["name"]: g["members"] for g in groups}["lab"] == []
    assert daemon.as_user(alice, "GET", "/v1/me").status == 403


def test_nai_admin_without_daemon_says_so(tmp_path) -> None:
    out = subprocess.run([str(BIN / "nai-admin"), "--socket", str(tmp_path / "none.sock"),
                          "user", "list"], capture_output=True, text=True)
    assert out.returncode == 1 and "nai-server run" in out.stderr and out.stdout == ""


def test_socket_mode_and_clean_shutdown(daemon: Daemon) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o666
    assert daemon.stop(signal.SIGTERM) == 0
    assert not daemon.socket.exists()
    assert "nai-server stopped" in daemon.log()


def test_sigint_also_stops_cleanly(daemon: Daemon) -> None:
    assert daemon.stop(signal.SIGINT) == 0
    assert not daemon.socket.exists()


def test_personal_mode_refuses_other_users(daemon_factory, make_user) -> None:
    d = daemon_factory(mode="personal")
    d.start()
    assert stat.S_IMODE(d.socket.stat().st_mode) == 0o600
    me = d.as_user(None, "GET", "/v1/me").json()
    assert me["uid"] == os.getuid() and me["admin"] is True
    # Even with the socket opened up, another uid is refused by identity, not by mode.
    os.chmod(d.socket, 0o666)
    os.chmod(d.socket.parent, 0o755)
    alice = make_user()
    refused = d.as_user(alice, "GET", "/v1/me")
    assert refused.status == 403 and "personal nai server" in refused.json()["error"]["message"]


def test_refuses_unreadable_state_and_keeps_it(daemon: Daemon) -> None:
    daemon.stop()
    state = daemon.state / "state.json"
    state.write_text('{"users": {"1": {"name": "al')
    before = state.read_bytes()
    proc = subprocess.run([str(BIN / "nai-server"), "run", "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert str(state) in proc.stderr and "unreadable" in proc.stderr
    assert state.read_bytes() == before


def test_second_daemon_on_same_socket_is_refused(daemon: Daemon) -> None:
    proc = subprocess.run([str(BIN / "nai-server"), "run", "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "already answering" in proc.stderr
    assert daemon.answers()


def test_check_reports_fake_gpus_and_daemon(daemon: Daemon) -> None:
    ok = subprocess.run([str(BIN / "nai-server"), "check", "--config", str(daemon.config_path)],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "gpu source: fake" in ok.stdout and "answering" in ok.stdout
    report = json.loads(subprocess.run(
        [str(BIN / "nai-server"), "check", "--json", "--config", str(daemon.config_path)],
        capture_output=True, text=True, timeout=30).stdout)
    assert report["ok"] and report["gpu_source"] == "fake" and len(report["gpus"]) == 2
    daemon.stop()
    down = subprocess.run([str(BIN / "nai-server"), "check", "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "no daemon answers" in down.stdout


def test_dial_stdio_is_hidden_and_reports_missing_socket(tmp_path) -> None:
    help_text = subprocess.run([str(BIN / "nai-server"), "--help"], capture_output=True,
                               text=True).stdout
    assert "dial-stdio" not in help_text and "run" in help_text
    out = subprocess.run([str(BIN / "nai-server"), "dial-stdio", "--socket",
                          str(tmp_path / "x.sock")], capture_output=True, text=True, input="")
    assert out.returncode == 1 and "no daemon socket" in out.stderr
