"""A listing asked again while nothing it shows changed is served encoded as it was;
any write to the store, a new plan or another caller gets a fresh one."""

from __future__ import annotations

import json
import threading

from starlette.testclient import TestClient

from nai_server.app.accounts import Caller
from nai_server.app.listing_cache import ListingCache
from nai_server.app.use_cases import UseCases
from nai_server.core.spec import spec_from_dict
from nai_server.testing import wait_for

OWNER = Caller("alice", uid=60_000, admin=False)
OTHER = Caller("bob", uid=60_001, admin=False)


def _ids(body: bytes) -> list[int]:
    return [j["id"] for j in json.loads(body)["jobs"]]


def test_a_repeated_listing_is_built_once_until_the_store_changes(
        api: TestClient, service: UseCases) -> None:
    api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 0}})
    cache = service.jobs.listings
    first = api.get("/v1/jobs", params={"limit": 10})
    again = api.get("/v1/jobs", params={"limit": 10})
    assert first.content == again.content and cache.builds == 1

    created = api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 0}}).json()
    after = api.get("/v1/jobs", params={"limit": 10}).json()
    assert cache.builds == 2 and after["jobs"][0]["id"] == created["id"]
    api.delete(f"/v1/jobs/{created['id']}")
    assert api.get("/v1/jobs", params={"limit": 10}).json()["jobs"][0]["state"] == "cancelled"
    api.get("/v1/jobs", params={"limit": 5})  # another query is a listing of its own
    assert cache.builds == 4


def test_a_new_plan_rebuilds_a_listing_but_the_same_plan_again_does_not(
        service: UseCases) -> None:
    job = service.jobs.submit(OWNER, spec_from_dict({"command": "true", "gpus": 0}), None)
    state = service.runtime.state
    service.jobs.list_json(OWNER)
    state.waiting = {job.id: "priority"}  # what a tick does: a new dict each time
    listed = json.loads(service.jobs.list_json(OWNER))["jobs"][0]
    assert listed["reason"] == "priority" and service.jobs.listings.builds == 2
    state.waiting = {job.id: "priority"}  # an equal plan: the kept listing holds
    state.est_start = dict(state.est_start)
    service.jobs.list_json(OWNER)
    assert service.jobs.listings.builds == 2


def test_each_caller_gets_a_listing_of_their_own(service: UseCases) -> None:
    spec = spec_from_dict({"command": "true", "gpus": 0, "env": {"TOKEN": "s3cret"}})
    service.jobs.submit(OWNER, spec, None)
    assert b"s3cret" in service.jobs.list_json(OWNER)
    assert b"s3cret" not in service.jobs.list_json(OTHER)
    assert b"s3cret" not in service.jobs.list_json(OTHER, scope="all")


def test_callers_that_miss_the_same_listing_at_once_build_it_once() -> None:
    cache = ListingCache()
    started, release = threading.Event(), threading.Event()

    def build() -> bytes:
        started.set()
        release.wait(30)
        return b"listing"

    stamps: list[int] = []

    def stamp() -> tuple[int]:
        stamps.append(1)
        return (1,)

    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda: answers.append(cache.get("k", stamp, build)))
               for _ in range(3)]
    threads[0].start()
    started.wait(30)
    for t in threads[1:]:
        t.start()
    wait_for(lambda: len(stamps) >= 4, what="the other callers to ask")
    release.set()
    for t in threads:
        t.join(30)
    assert answers == [b"listing"] * 3 and cache.builds == 1


def test_kept_listings_stay_within_their_bounds() -> None:
    cache = ListingCache(max_bytes=4000, max_entries=3)
    for i in range(10):
        cache.get(i, lambda: (1,), lambda: b"x" * 900)
    assert len(cache._entries) == 3 and cache._bytes == 2700
    cache.get("huge", lambda: (1,), lambda: b"x" * 2000)  # over a quarter: not kept
    assert "huge" not in cache._entries
    assert cache.get(9, lambda: (2,), lambda: b"new") == b"new"  # a stale stamp rebuilds
