"""One request must not poison the state, and no job may inherit another's directory.

The attack: a value the state file cannot hold (`time_limit: "99999999999999999999d"`
is an integer beyond 64 bits) was kept in memory, every later commit failed, a restart
rolled the job ids back, and the next user's job got the attacker's job directory,
whose `code/` held the attacker's files. The same happens after an operator restores
an older backup of state.json, or finds it empty after a crash.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from nai_server.app.accounts import Peer
from nai_server.app.use_cases import UseCases
from nai_server.host import unix
from nai_server.protocol import TERMINAL_STATES, Forbidden
from nai_server.store import atomic
from nai_server.store.atomic import CommitFailed
from nai_server.store.journal import read_state
from nai_server.testing import make_service
from tests.integration.conftest import Daemon, UnixUser, needs_root, wait_for

TERMINAL = TERMINAL_STATES
POISON = "99999999999999999999d"


def _register(daemon: Daemon, *users: UnixUser) -> None:
    for user in users:
        assert daemon.admin("user", "add", user.name).returncode == 0


def _submit(daemon: Daemon, user: UnixUser, command: str, **spec: Any) -> int:
    response = daemon.as_user(user, "POST", "/v1/jobs",
                              {"spec": {"command": command, "gpus": 0, **spec}})
    assert response.status == 201, response.body
    return int(response.json()["id"])


def _ended(daemon: Daemon, user: UnixUser, job_id: int) -> bool:
    return daemon.as_user(user, "GET", f"/v1/jobs/{job_id}").json()["state"] in TERMINAL


def _saved_job_ids(daemon: Daemon) -> set[int]:
    return {int(k) for k in read_state(daemon.state / "state.json")["jobs"]}


@needs_root
def test_a_value_the_state_cannot_hold_is_refused_and_later_writes_are_saved(
        daemon: Daemon, make_user) -> None:
    mallory = make_user()
    _register(daemon, mallory)
    before = _submit(daemon, mallory, "true")
    poisoned = daemon.as_user(mallory, "POST", "/v1/jobs", {"spec": {
        "command": "true", "gpus": 0, "time_limit": POISON}})
    # Refused with an error that says what happened (a 4xx, or 503 if only the commit
    # noticed), never "internal server error" and never accepted.
    assert poisoned.status in (400, 413, 422, 503), poisoned.body
    assert "internal" not in poisoned.json()["error"]["message"]
    # The daemon still saves every later change, and it survives a kill -9.
    after = _submit(daemon, mallory, "true")
    assert after > before and {before, after} <= _saved_job_ids(daemon)
    daemon.stop(signal.SIGKILL)
    daemon.start()
    mine = daemon.as_user(mallory, "GET", "/v1/jobs?scope=mine").json()["jobs"]
    listed = {j["id"] for j in mine}
    assert {before, after} <= listed
    assert _submit(daemon, mallory, "true") > after


@needs_root
def test_a_restart_never_reuses_a_job_id_or_directory(daemon: Daemon, make_user) -> None:
    mallory, victim = make_user(), make_user()
    _register(daemon, mallory, victim)
    first = _submit(daemon, mallory, "true")
    wait_for(lambda: _ended(daemon, mallory, first), what="the first job to end")
    backup = (daemon.state / "state.json").read_bytes()  # knows job `first` only

    # Mallory's next job leaves files in its own directory, for whoever gets it next.
    planted = _submit(daemon, mallory, "echo mallory > planted; echo planted > ../marker")
    wait_for(lambda: _ended(daemon, mallory, planted), what="the planting job to end")
    planted_dir = daemon.state / "jobs" / str(planted)
    assert (planted_dir / "code" / "planted").stat().st_uid == mallory.uid

    # The state file is lost: empty after a crash, the daemon refuses to start...
    daemon.stop(signal.SIGKILL)
    (daemon.state / "state.json").write_bytes(b"  \n")
    with pytest.raises(AssertionError):
        daemon.start()
    assert "state.json" in daemon.log() and "empty" in daemon.log()
    # ...and an older backup, restored, does not hand out the planted job's id again.
    (daemon.state / "state.json").write_bytes(backup)
    daemon.start()
    job_dirs = [int(p.name) for p in (daemon.state / "jobs").iterdir() if p.name.isdigit()]
    job = _submit(daemon, victim, "ls -A; cat ../marker 2>/dev/null; true")
    assert job > max(job_dirs) >= planted
    wait_for(lambda: _ended(daemon, victim, job), what="the victim's job to end")
    log = daemon.as_user(victim, "GET", f"/v1/jobs/{job}/logs").body.decode()
    assert "planted" not in log
    job_dir = daemon.state / "jobs" / str(job)
    assert (job_dir / "code").stat().st_uid == victim.uid
    assert not (job_dir / "code" / "planted").exists()
    assert (planted_dir / "code" / "planted").read_text() == "mallory\n"  # left alone


def test_a_commit_that_fails_is_an_error_for_its_request_and_is_not_kept(
        api: TestClient, service: UseCases, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk refuses one write (ENOSPC): the request that made the change hears it,
    nothing of it stays in memory, and the next request is saved as usual."""
    kept = api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 0}}).json()["id"]
    real_write, real_sync = atomic.atomic_write, os.fdatasync

    def disk_full(*args: Any) -> None:
        monkeypatch.setattr(atomic, "atomic_write", real_write)  # the next write works
        monkeypatch.setattr(os, "fdatasync", real_sync)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "atomic_write", disk_full)
    monkeypatch.setattr(os, "fdatasync", disk_full)  # the hot state journal's appends
    failed = api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 0}})
    assert failed.status_code == 507, failed.text  # Insufficient Storage
    message = failed.json()["error"]["message"]
    assert message.startswith("server disk full")
    assert "No space left on device" in message and "nothing was changed" in message
    assert [j["id"] for j in api.get("/v1/jobs").json()["jobs"]] == [kept]
    later = api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 0}})
    assert later.status_code == 201 and later.json()["id"] > kept + 1  # the lost id is spent
    on_disk = read_state(service.config.state / "state.json")
    assert sorted(int(k) for k in on_disk["jobs"]) == [kept, later.json()["id"]]


def test_an_account_whose_commit_failed_grants_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that arrives while an admin's `user add` is being flushed sees the new
    account; when the flush fails and the account is rolled back, the daemon's cache of
    who may call it must not keep it."""
    service = make_service(tmp_path / "state", mode="multi-user")
    peer = Peer(pid=os.getpid(), uid=1, gid=1)  # the unix account "daemon"
    name = unix.user_name(peer.uid)
    assert name is not None
    during_flush: list[str] = []
    real_write = atomic.atomic_write

    def full_after_a_request(path: Path, data: bytes, mode: int = 0o600) -> None:
        monkeypatch.setattr(atomic, "atomic_write", real_write)
        during_flush.append(service.accounts.resolve(peer).user)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "atomic_write", full_after_a_request)
    with pytest.raises(CommitFailed):
        service.accounts.add_user(name)
    assert during_flush == [name]
    with pytest.raises(Forbidden, match="not registered"):
        service.accounts.resolve(peer)
    service.close()
