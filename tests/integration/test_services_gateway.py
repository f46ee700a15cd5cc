"""The HTTP gateway: off unless configured; on, a service answers on TCP only with a
bearer token made for it (stored hashed, shown once, revocable), or when its owner
marks it public and the admin allows public services."""

from __future__ import annotations

import json

import httpx
from conftest import free_port, needs_root  # type: ignore[import-not-found]
from svc_support import (  # type: ignore[import-not-found]
    reaper,
    register_model,
    register_user,
    wait_state,
)

pytestmark = [needs_root]
__all__ = ["reaper"]


def test_gateway_tokens_and_public_services(daemon_factory, make_user, reaper) -> None:
    port = free_port()
    daemon = daemon_factory(services={"gateway": {"listen": f"127.0.0.1:{port}"}})
    daemon.start()
    user, other = make_user(), make_user()
    reaper.extend([(daemon, user), (daemon, other)])
    register_user(daemon, user)
    register_user(daemon, other)
    register_model(daemon, user, "adder", weights="gw")
    assert daemon.as_user(user, "POST", "/v1/services",
                          {"name": "adder", "model": "adder", "gpus": 0}).status == 201
    wait_state(daemon, "adder", "ready")
    url = f"http://127.0.0.1:{port}/adder/predict"
    body = {"inputs": [1, 2]}

    def ask(token: str | None, where: str = url) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(where, json=body, headers=headers, timeout=30)

    assert ask(None).status_code == 401
    assert ask("nai_forged").status_code == 401
    # Only writers make tokens; another user may not even see the service.
    assert daemon.as_user(other, "POST", "/v1/services/adder/tokens", {}).status == 404
    made = daemon.as_user(user, "POST", "/v1/services/adder/tokens", {"label": "ci"})
    assert made.status == 201, made.body
    token, token_id = made.json()["token"], made.json()["id"]
    listed = daemon.as_user(user, "GET", "/v1/services/adder/tokens").json()
    assert [t["token"] for t in listed] == [None]  # shown once
    assert token not in (daemon.state / "state.json").read_text()  # only its hash is kept

    answer = ask(token)
    assert answer.status_code == 200, answer.text
    assert answer.content == json.dumps({"sum": 3, "weights": "gw"}, sort_keys=True).encode()
    assert ask(token, f"http://127.0.0.1:{port}/other/predict").status_code == 401

    revoked = daemon.as_user(user, "DELETE", f"/v1/services/adder/tokens/{token_id}")
    assert revoked.status == 204, revoked.body
    assert ask(token).status_code == 401

    # Public, but the admin did not allow public services: still a token or nothing.
    assert daemon.as_user(user, "PATCH", "/v1/services/adder", {"public": True}).status == 200
    assert ask(None).status_code == 401


def test_public_service_where_the_admin_allows_it(daemon_factory, make_user, reaper) -> None:
    port = free_port()
    daemon = daemon_factory(services={"gateway": {"listen": f"127.0.0.1:{port}",
                                                  "allow_public": True}})
    daemon.start()
    user = make_user()
    reaper.append((daemon, user))
    register_user(daemon, user)
    register_model(daemon, user, "adder", weights="pub")
    assert daemon.as_user(user, "POST", "/v1/services",
                          {"name": "adder", "model": "adder", "gpus": 0}).status == 201
    wait_state(daemon, "adder", "ready")
    url = f"http://127.0.0.1:{port}/adder/whoami"
    assert httpx.get(url, timeout=30).status_code == 401  # not public yet
    assert daemon.as_user(user, "PATCH", "/v1/services/adder", {"public": True}).status == 200
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200 and answer.json()["uid"] == user.uid
