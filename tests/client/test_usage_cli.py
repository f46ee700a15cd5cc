"""`nai usage` (issue 17, item 7, for the CLI): per-user and per-group GPU use as
`sshare` shows it, through `nai`'s real `main` against the in-process server."""

from __future__ import annotations

import getpass
import json
from typing import Any

import pytest

from nai_server.app.use_cases import UseCases
from nai_server.protocol import NotFound
from nai_server.testing import tick_until
from nai_tui.cli import contract, usage_command
from nai_tui.remote.client import ServerClient


def test_usage_shows_who_holds_gpus_their_standing_and_quota(
        nai: Any, client: ServerClient, service: UseCases) -> None:
    me = getpass.getuser()
    status, out, err = nai("usage")
    assert status == 0 and out == "" and "no GPU use recorded yet" in err
    client._json("POST", "/v1/users", json={"name": me})
    client._json("PUT", f"/v1/users/{me}/quota", json={"max_gpus": 3, "gpu_hours": 100,
                                                       "period_days": 7})
    job = client._json("POST", "/v1/jobs", json={"spec": {
        "command": "sleep 30", "gpus": 2, "time_limit": "1h"}})
    tick_until(service, lambda: client.job(job["id"]).state == "running",
               what="the job to run")
    status, out, err = nai("usage")
    assert status == 0, err
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["KIND", "NAME", "GPUS"]
    assert row.split()[:3] == ["user", me, "2"]
    assert "1.0×" in row and "/100 GPU-h in 7 d, 2/3 GPUs" in row
    assert "half-life" in err  # how to read it, on stderr: stdout stays data
    status, out, _ = nai("usage", "--json")
    report = json.loads(out)
    assert report["half_life_hours"] > 0
    assert [(r["kind"], r["name"], r["gpus_in_use"]) for r in report["rows"]] == [
        ("user", me, 2)]
    status, out, err = nai("usage", "--user", "nobody-here")
    assert status == 0 and out == "" and "no GPU use recorded for nobody-here" in err
    assert json.loads(nai("usage", "--groups", "--json")[1])["rows"] == []
    client._json("DELETE", f"/v1/jobs/{job['id']}")


def test_a_server_without_the_report_says_to_upgrade_it(
        nai: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def older(client: ServerClient) -> Any:
        raise NotFound("Not Found")

    monkeypatch.setattr(usage_command, "read_usage", older)
    status, out, err = nai("usage")
    assert status == contract.NOT_FOUND and out == ""
    assert "older than `nai usage`" in err and "upgrade the server" in err
