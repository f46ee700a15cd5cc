"""`nai-admin plugin enable|disable NAME` (PUT /v1/plugins/NAME): takes effect on the
next submit and is kept across restarts, over the server config."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.config import PluginConfig
from nai_server.plugins import PluginRegistry
from nai_server.plugins.contracts import Kind, Refuse, hookimpl
from nai_server.testing import AsPeer, make_service


class NoBigJobs:
    @hookimpl
    def nai_submit_rule(self, submission, options):
        if submission.spec["gpus"] > options.get("most", 1):
            raise Refuse("too many GPUs")


def start(state: Path):
    registry = PluginRegistry.from_objects(
        {"no_big": PluginConfig(enabled=False, options={"most": 1})},
        [("no_big", Kind.SUBMIT_RULE, NoBigJobs())])
    service = make_service(state, plugins=registry)
    return service, TestClient(AsPeer(create_app(service)), base_url="http://nai")


def submit(api: TestClient) -> int:
    return api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 2}}).status_code


def test_enable_and_disable_apply_now_and_after_a_restart(tmp_path: Path) -> None:
    service, api = start(tmp_path / "state")
    assert submit(api) == 201
    rows = api.put("/v1/plugins/no_big", json={"enabled": True}).json()
    assert [(r["kind"], r["state"]) for r in rows] == [("submit_rule", "ok")]
    assert submit(api) == 403
    assert api.put("/v1/plugins/nothing", json={"enabled": True}).status_code == 404
    service.close()

    service, api = start(tmp_path / "state")  # the choice outlives the process
    assert submit(api) == 403
    assert api.put("/v1/plugins/no_big", json={"enabled": False}).status_code == 200
    assert submit(api) == 201
    assert {r["name"]: r["state"] for r in api.get("/v1/plugins").json()} == {
        "no_big": "disabled"}
    service.close()
