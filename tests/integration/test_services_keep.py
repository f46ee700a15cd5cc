"""What a service keeps, through the real daemon as a real unix user: the model version
it serves cannot be removed under it (the refusal says which service and how to stop
it), and one user cannot grow the daemon's state without bound (services at once,
tokens per service)."""

from __future__ import annotations

from conftest import Daemon, needs_root  # type: ignore[import-not-found]
from svc_support import (  # type: ignore[import-not-found]
    reaper,
    register_model,
    register_user,
    wait_state,
)

pytestmark = [needs_root]
__all__ = ["reaper"]


def test_a_served_version_is_kept_until_the_service_stops(daemon: Daemon, make_user,
                                                          reaper) -> None:
    user = make_user()
    reaper.append((daemon, user))
    register_user(daemon, user)
    register_model(daemon, user, "adder", weights="w1")
    register_model(daemon, user, "adder", weights="w2")
    made = daemon.as_user(user, "POST", "/v1/services", {"name": "calc", "model": "adder@1"})
    assert made.status == 201, made.body
    wait_state(daemon, "calc", "ready")
    refused = daemon.as_user(user, "DELETE", "/v1/models/adder/versions/1")
    assert refused.status == 409, refused.body
    message = refused.json()["error"]["message"]
    assert "calc (adder@1)" in message and "nai service stop" in message
    assert daemon.as_user(user, "DELETE", "/v1/models/adder").status == 409
    with daemon.client() as root:  # nor by an admin
        assert root.delete("/v1/models/adder/versions/1").status_code == 409
    other = daemon.as_user(user, "DELETE", "/v1/models/adder/versions/2")
    assert other.status == 200, other.body  # a version no service uses goes
    assert daemon.as_user(user, "DELETE", "/v1/services/calc").status == 200
    gone = daemon.as_user(user, "DELETE", "/v1/models/adder/versions/1")
    assert gone.status == 200, gone.body


def test_one_user_cannot_grow_service_state_without_bound(daemon_factory, make_user,
                                                         reaper) -> None:
    daemon = daemon_factory(services={"max_services_per_user": 2,
                                      "max_tokens_per_service": 2})
    daemon.start()
    user = make_user()
    reaper.append((daemon, user))
    register_user(daemon, user)
    register_model(daemon, user, "adder")
    for name in ("a", "b"):
        made = daemon.as_user(user, "POST", "/v1/services",
                              {"name": name, "model": "adder", "replicas": 0})
        assert made.status == 201, made.body
    over = daemon.as_user(user, "POST", "/v1/services",
                          {"name": "c", "model": "adder", "replicas": 0})
    assert over.status == 409 and "nai service stop" in over.json()["error"]["message"]
    for label in ("x", "y"):
        assert daemon.as_user(user, "POST", "/v1/services/a/tokens",
                              {"label": label}).status == 201
    too_many = daemon.as_user(user, "POST", "/v1/services/a/tokens", {"label": "z"})
    assert too_many.status == 409 and "revoke" in too_many.json()["error"]["message"]


def test_a_removal_refused_names_only_the_services_the_caller_may_see(
        daemon: Daemon, make_user, reaper) -> None:
    """Another user's private service on a shared model blocks its removal, but its name
    is not the model owner's to learn: it is counted, not named."""
    owner, other = make_user(), make_user()
    for user in (owner, other):
        reaper.append((daemon, user))
        register_user(daemon, user)
    register_model(daemon, owner, "shared-adder", shared=True)
    for user, name in ((other, "their-secret"), (owner, "mine")):
        made = daemon.as_user(user, "POST", "/v1/services",
                              {"name": name, "model": "shared-adder@1", "replicas": 0})
        assert made.status == 201, made.body
    refused = daemon.as_user(owner, "DELETE", "/v1/models/shared-adder/versions/1")
    assert refused.status == 409, refused.body
    message = refused.json()["error"]["message"]
    assert "their-secret" not in message, message
    assert "mine (shared-adder@1) and 1 service you cannot see" in message, message
    assert daemon.as_user(owner, "DELETE", "/v1/services/mine").status == 200
    refused = daemon.as_user(owner, "DELETE", "/v1/models/shared-adder")
    assert refused.status == 409, refused.body
    message = refused.json()["error"]["message"]
    assert "their-secret" not in message and "1 service you cannot see" in message, message
    with daemon.client() as root:  # an admin sees every service
        seen = root.delete("/v1/models/shared-adder/versions/1")
        assert seen.status_code == 409 and "their-secret (shared-adder@1)" in seen.text
