"""A dry-run submit (`POST /v1/jobs?dry_run=1`) is a submit that creates nothing, so it
must refuse exactly what a submit refuses. Through the real daemon, as real non-root
unix users: Bob, trying Alice's private dataset, her code tree, or a priority he may
not ask for, gets a dry run's refusal identical to the submit's (no "it would work"
leaks what he may not read), and no dry run ever queues a job."""

from __future__ import annotations

from tests.integration.conftest import Daemon, needs_root
from tests.integration.conftest import upload_as as upload
from tests.security.test_tree_read_rights import SECRET

pytestmark = [needs_root]


def test_a_dry_run_refuses_what_a_submit_refuses(daemon: Daemon, make_user) -> None:
    alice, bob = make_user(), make_user()
    for user in (alice, bob):
        assert daemon.admin("user", "add", user.name).returncode == 0
    tree = upload(daemon, alice, SECRET)
    code = upload(daemon, alice, {"train.py": b"print('alice')\n"})
    made = daemon.as_user(alice, "POST", "/v1/datasets", {"name": "private", "tree_id": tree})
    assert made.status == 201, made.body

    mine = daemon.as_user(alice, "POST", "/v1/jobs?dry_run=1", {
        "spec": {"command": "true", "gpus": 1, "dataset": "private"}, "code_tree": code})
    assert mine.status == 200, mine.body
    assert mine.json()["id"] == 0 and mine.json()["dataset"]["tree_id"] == tree

    for body in ({"spec": {"command": "true", "gpus": 1, "dataset": "private"}},
                 {"spec": {"command": "true", "gpus": 1}, "code_tree": code},
                 {"spec": {"command": "true", "gpus": 1, "priority": "high"}},
                 {"spec": {"command": "true", "gpus": 1, "dataset": f"{alice.name}/private"}}):
        real = daemon.as_user(bob, "POST", "/v1/jobs", body)
        trial = daemon.as_user(bob, "POST", "/v1/jobs?dry_run=1", body)
        assert real.status >= 400, (body, real.body)
        assert (trial.status, trial.body) == (real.status, real.body), body
        assert tree.encode() not in trial.body and b"secret" not in trial.body

    listed = daemon.as_user(alice, "GET", "/v1/jobs")
    assert listed.json()["total"] == 0  # nothing was queued, by anyone
