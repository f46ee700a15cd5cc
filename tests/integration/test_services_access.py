"""Who may do what with a service, through the real daemon as real unix users: the
owner, a member of the owning group, another user and an admin × list, show, invoke,
update, stop, tokens, on private, group and shared services. Readable but not
writable answers 403 naming who may; unreadable answers 404, as for no service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Daemon, needs_root  # type: ignore[import-not-found]
from svc_support import (  # type: ignore[import-not-found]
    SERVE_YAML,
    model_files,
    reaper,
    wait_state,
)
from test_registry_access import Actor, upload_tree  # type: ignore[import-not-found]

pytestmark = [needs_root]
__all__ = ["reaper"]

ACTORS = ("owner", "member", "other", "admin")
SERVICES = {  # name: (owned by the group "lab"?, visibility)
    "priv": (False, "private"), "grp": (True, "group"),
    "ugrp": (False, "group"), "shared": (False, "shared")}


def may_read(actor: str, service: str) -> bool:
    by_group, visibility = SERVICES[service]
    if actor in ("owner", "admin") or visibility == "shared":
        return True
    return actor == "member" and (by_group or visibility == "group")


def may_write(actor: str, service: str) -> bool:
    by_group, _ = SERVICES[service]
    return actor in ("owner", "admin") or (by_group and actor == "member")


def expected(actor: str, service: str) -> int:
    if may_write(actor, service):
        return 200
    return 403 if may_read(actor, service) else 404


@pytest.fixture
def people(daemon: Daemon, make_user, reaper) -> Iterator[dict[str, Actor]]:
    users = {actor: make_user() for actor in ACTORS}
    reaper.extend((daemon, u) for u in users.values())
    with daemon.client() as root:
        for user in users.values():
            assert root.post("/v1/users", json={"name": user.name}).status_code == 201
        assert root.post("/v1/groups", json={"name": "lab"}).status_code == 201
        for group, actor in (("lab", "owner"), ("lab", "member"), ("admins", "admin")):
            added = root.post(f"/v1/groups/{group}/members", json={"user": users[actor].name})
            assert added.status_code == 201
    actors = {name: Actor(daemon, user) for name, user in users.items()}
    yield actors
    for actor in actors.values():
        actor.http.close()


def test_service_access_matrix(daemon: Daemon, people: dict[str, Actor]) -> None:
    owner = people["owner"]
    tree = upload_tree(daemon, model_files("w1", SERVE_YAML), owner)
    assert owner("POST", "/v1/models", {"name": "m", "tree_id": tree}).status == 201
    assert owner("POST", "/v1/models/m/versions", {"tree_id": tree,
                                                   "allow_same": True}).status == 201
    # A model the caller may not read cannot be served by them: as if it did not exist.
    refused = people["other"]("POST", "/v1/services", {"name": "x", "model": "m@1"})
    assert refused.status == 404, refused.body
    # Nor can a group they are not in own it.
    refused = people["other"]("POST", "/v1/services",
                              {"name": "x", "model": "m@1", "group": "lab"})
    assert refused.status in (403, 404), refused.body
    for name, (by_group, visibility) in SERVICES.items():
        made = owner("POST", "/v1/services", {
            "name": name, "model": "m@1", "gpus": 0, "visibility": visibility,
            "group": "lab" if by_group else None})
        assert made.status == 201, made.body
    for name in SERVICES:
        wait_state(daemon, name, "ready")
    # Everyone may read the model now: what stops a model change below is the service.
    assert owner("PUT", "/v1/models/m/sharing", {"shared": True}).status == 200

    for actor_name, actor in people.items():
        listed = {s["name"] for s in actor("GET", "/v1/services").body["services"]}
        assert listed == {s for s in SERVICES if may_read(actor_name, s)}, actor_name
        for name in SERVICES:
            where = f"{actor_name} on {name}"
            shown = actor("GET", f"/v1/services/{name}")
            assert shown.status == (200 if may_read(actor_name, name) else 404), where
            if shown.status == 200:
                assert shown.body["may_write"] == may_write(actor_name, name), where
            invoked = actor("GET", f"/v1/services/{name}/invoke/health")
            assert invoked.status == (200 if may_read(actor_name, name) else 404), where
            if invoked.status == 404:
                assert "no service named" in invoked.body["error"]["message"], where
            updated = actor("PATCH", f"/v1/services/{name}", {"public": False})
            assert updated.status == expected(actor_name, name), (where, updated.body)
            if updated.status == 403:
                assert "may update it" in updated.body["error"]["message"], where
            tokens = actor("GET", f"/v1/services/{name}/tokens")
            assert tokens.status == expected(actor_name, name), where
            # A replica's log may hold what callers sent: writers only, as tokens.
            logs = actor("GET", f"/v1/services/{name}/logs")
            assert logs.status == expected(actor_name, name), where
            # The model decides the command the replicas run, as the owner's account:
            # only that user may change it, not a group member nor an admin.
            if actor_name != "owner":
                rolled = actor("PATCH", f"/v1/services/{name}", {"model": "m@2"})
                want = 403 if may_write(actor_name, name) else expected(actor_name, name)
                assert rolled.status == want, (where, rolled.body)
                if may_write(actor_name, name):
                    assert "only they may change its model" in \
                        rolled.body["error"]["message"], where

    # Stopping: those who may not first (nothing stops), then every writer.
    for name in SERVICES:
        for actor_name in sorted(ACTORS, key=lambda a: may_write(a, name)):
            stopped = people[actor_name]("DELETE", f"/v1/services/{name}")
            assert stopped.status == expected(actor_name, name), (actor_name, name)
            if not may_write(actor_name, name):
                assert people["owner"]("GET", f"/v1/services/{name}").body["state"] == "ready"
            else:
                assert stopped.body["state"] == "stopped"
