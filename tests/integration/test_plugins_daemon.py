"""Plugins installed in the daemon's environment (a distribution with entry points on
its path, as pip leaves one), through the real daemon and real unix users."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]

from nai_server.testing.plugin_dist import write_dist

pytestmark = [needs_root]


def test_installed_plugins_refuse_notify_and_survive_a_broken_one(
        daemon_factory, make_user, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = write_dist(Path(str(tmp_path)) / "site", "nai-site-plugins", "0.3.0",
                      {"t_site_broken": "import no_such_module_anywhere\n"}, {
        "nai.submit_rules": {"site_max_gpus": "nai_plugins.limits:max_gpus_per_user",
                             "site_broken": "t_site_broken"},
        "nai.notifiers": {"site_events": "nai_plugins.notify_file"}})
    monkeypatch.setenv("PYTHONPATH", f"{site}:{os.environ.get('PYTHONPATH', '')}")
    events = tmp_path / "events.jsonl"
    daemon: Daemon = daemon_factory(plugins={
        "site_max_gpus": {"options": {"max_gpus": 1}},
        "site_broken": {},
        "site_events": {"options": {"path": str(events), "events": ["started", "succeeded"]}}})
    daemon.start()

    listing = daemon.admin("--json", "plugins")
    assert listing.returncode == 0, listing.stderr
    rows = {p["name"]: p for p in json.loads(listing.stdout)}
    assert rows["site_max_gpus"]["state"] == "ok" and rows["site_max_gpus"]["version"] == "0.3.0"
    assert rows["site_events"]["state"] == "ok"
    assert rows["site_broken"]["state"] == "broken"
    assert "no_such_module_anywhere" in rows["site_broken"]["error"]
    assert "site_broken" in daemon.admin("plugins").stdout

    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    refused = daemon.as_user(alice, "POST", "/v1/jobs", {"spec": {"command": "true", "gpus": 2}})
    assert refused.status == 403
    error = refused.json()["error"]
    assert "submit rule site_max_gpus refused this job: at most 1 GPU" in error["message"]
    assert error["details"] == {"rule": "site_max_gpus"}
    # Alice sees what is installed, but not why a plugin broke.
    seen = {p["name"]: p for p in daemon.as_user(alice, "GET", "/v1/plugins").json()}
    assert "no_such_module" not in seen["site_broken"]["error"]

    ok = daemon.as_user(alice, "POST", "/v1/jobs", {"spec": {"command": "true", "gpus": 1}})
    assert ok.status == 201, ok.body
    job = ok.json()["id"]

    def told() -> list[str]:
        lines = events.read_text().splitlines() if events.exists() else []
        return [e["event"] for e in map(json.loads, lines) if e["job_id"] == job]

    wait_for(lambda: told() == ["started", "succeeded"], what="the job's events in the file")

    # An admin turns the rule off for good; alice cannot.
    assert daemon.admin("plugin", "disable", "site_max_gpus", user=alice).returncode != 0
    off = daemon.admin("plugin", "disable", "site_max_gpus")
    assert off.returncode == 0 and "submit_rule: disabled" in off.stdout, off.stderr
    again = daemon.as_user(alice, "POST", "/v1/jobs", {"spec": {"command": "true", "gpus": 2}})
    assert again.status == 201, again.body
    assert daemon.answers()
