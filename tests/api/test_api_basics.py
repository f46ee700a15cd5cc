"""The API in process: versions, identity, error bodies, method override, admin routes."""

from __future__ import annotations

import os

from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app.use_cases import UseCases
from nai_server.protocol import API_VERSION
from nai_server.testing import AsPeer


def test_version_and_openapi(api: TestClient) -> None:
    body = api.get("/v1/version").json()
    assert body["api_version"] == API_VERSION
    assert body["mode"] == "personal"
    spec = api.get("/openapi.json").json()
    assert "/v1/version" in spec["paths"] and "/v1/users" in spec["paths"]


def test_me_is_the_daemon_owner_in_personal_mode(api: TestClient) -> None:
    me = api.get("/v1/me").json()
    assert me["uid"] == os.getuid() and me["admin"] is True


def test_personal_mode_refuses_other_uids(service: UseCases) -> None:
    other = TestClient(AsPeer(create_app(service), uid=os.getuid() + 4242), base_url="http://n")
    response = other.get("/v1/me")
    assert response.status_code == 403
    assert "personal nai server" in response.json()["error"]["message"]


def test_no_peer_credentials_is_unauthenticated(service: UseCases) -> None:
    response = TestClient(create_app(service), base_url="http://n").get("/v1/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_unknown_route_and_bad_body_are_json_errors(api: TestClient) -> None:
    missing = api.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad = api.post("/v1/groups", json={"name": "../etc"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid" and "name" in bad.json()["error"]["message"]
    extra = api.post("/v1/groups", json={"name": "ok", "colour": "red"})
    assert extra.status_code == 400


def test_groups_crud_with_location_and_conflicts(api: TestClient) -> None:
    created = api.post("/v1/groups", json={"name": "vision"})
    assert created.status_code == 201 and created.headers["location"] == "/v1/groups/vision"
    dup = api.post("/v1/groups", json={"name": "vision"})
    assert dup.status_code == 409 and "already exists" in dup.json()["error"]["message"]
    assert [g["name"] for g in api.get("/v1/groups").json()] == ["admins", "vision"]
    assert api.delete("/v1/groups/vision").status_code == 204
    gone = api.delete("/v1/groups/vision")
    assert gone.status_code == 404 and "nai-admin group list" in gone.json()["error"]["message"]


def test_method_override_turns_post_into_delete_and_put(api: TestClient) -> None:
    api.post("/v1/groups", json={"name": "nlp"})
    response = api.post("/v1/groups/nlp", headers={"X-HTTP-Method-Override": "DELETE"})
    assert response.status_code == 204
    assert api.get("/v1/groups/nlp").status_code == 404
    put = api.post("/v1/drain", json={"drained": True},
                   headers={"X-HTTP-Method-Override": "put"})
    assert put.status_code == 200 and api.get("/v1/drain").json() == {"drained": True}
    bad = api.post("/v1/drain", headers={"X-HTTP-Method-Override": "TRACE"})
    assert bad.status_code == 400 and "PUT, PATCH, DELETE" in bad.json()["error"]["message"]


def test_quota_roundtrip_and_validation(api: TestClient) -> None:
    api.post("/v1/groups", json={"name": "lab"})
    put = api.put("/v1/groups/lab/quota", json={"max_gpus": 2, "gpu_hours": 100})
    assert put.status_code == 200
    assert api.get("/v1/groups/lab/quota").json() == {
        "max_gpus": 2, "gpu_hours": 100.0, "period_days": 30}
    assert api.put("/v1/groups/lab/quota", json={"max_gpus": -1}).status_code == 400


def test_adding_a_user_without_unix_account_says_what_to_do(api: TestClient) -> None:
    response = api.post("/v1/users", json={"name": "nosuchperson42"})
    assert response.status_code == 400
    assert "useradd" in response.json()["error"]["message"]


def test_admins_group_cannot_be_removed(api: TestClient) -> None:
    assert api.delete("/v1/groups/admins").status_code == 409
