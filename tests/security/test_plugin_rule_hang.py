"""A spec crafted to make a submit rule hang must not open a window in which later
submits pass that rule unchecked (the rule is not `required`, so the hung submit itself
goes on, by the plugin contract): through the real daemon, as real unix users."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nai_server.testing import wait_for
from nai_server.testing.plugin_dist import write_dist
from tests.integration.conftest import Daemon, needs_root

pytestmark = [needs_root]

RULE = '''
import os, time
from nai_server.plugins.contracts import Refuse, hookimpl

@hookimpl
def nai_submit_rule(submission, options):
    if submission.spec.get("name") == "slow":  # stands for any input the rule chokes on
        deadline = time.monotonic() + 120
        while not os.path.exists(options["release"]) and time.monotonic() < deadline:
            time.sleep(0.05)
    if int(submission.spec.get("gpus") or 0) > 1:
        raise Refuse("at most 1 GPU per job")
'''


def test_a_hung_rule_is_not_skipped_for_the_submits_after(
        daemon_factory, make_user, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = write_dist(tmp_path / "site", "nai-hang-rule", "1.0", {"t_hang_rule": RULE},
                      {"nai.submit_rules": {"one_gpu": "t_hang_rule"}})
    monkeypatch.setenv("PYTHONPATH", f"{site}:{os.environ.get('PYTHONPATH', '')}")
    release = tmp_path / "release"
    daemon: Daemon = daemon_factory(plugins={
        "one_gpu": {"timeout": 2, "options": {"release": str(release)}}})
    daemon.start()
    alice, bob = make_user(), make_user()
    for user in (alice, bob):
        assert daemon.admin("user", "add", user.name).returncode == 0

    def submit(user, **spec):
        return daemon.as_user(user, "POST", "/v1/jobs",
                              {"spec": {"command": "true", "gpus": 1, **spec}})

    hung = submit(alice, name="slow")
    assert hung.status == 201, hung.body  # not required: a timeout lets this one go on
    # While her check is stuck, alice's next submits are refused, not let through.
    busy = submit(alice, gpus=2)
    assert busy.status == 503, busy.body
    error = busy.json()["error"]
    assert "submit rule one_gpu is busy" in error["message"] and "retry" in error["message"]
    assert error["details"]["rule"] == "one_gpu"
    listing = {p["name"]: p for p in json.loads(daemon.admin("--json", "plugins").stdout)}
    assert listing["one_gpu"]["stuck"] == 1  # an admin sees the rule is stuck
    assert "1 call(s) stuck" in daemon.admin("plugins").stdout
    # Everyone else is still checked.
    refused = submit(bob, gpus=2)
    assert refused.status == 403, refused.body
    assert submit(bob).status == 201
    # Once the stuck call returns, alice's submits are checked again.
    release.touch()
    wait_for(lambda: submit(alice, gpus=2).status == 403, what="alice checked again")
    assert "submit rule one_gpu is busy" in daemon.log()
    assert daemon.answers()
