"""The registries at scale, in process with several callers: tree checks answer from
the store's index of the registry, which must follow every change (push, tag, removal,
a rolled-back write) exactly as a walk over the entries would; and one user's
datasets and models, and one entry's versions, are bounded, with refusals that say
which limit and what to remove."""

from __future__ import annotations

import copy
import errno
import hashlib
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.app.accounts import Caller
from nai_server.app.use_cases import UseCases
from nai_server.core import registry_rules as rules
from nai_server.store.registry_index import RegistryIndex
from nai_server.testing import as_callers, make_service, upload_tree

ALICE = Caller("alice", uid=61_000, admin=False, groups=("lab",))
BOB = Caller("bob", uid=61_001, admin=False)


def _service(tmp_path: Path, **registry: object) -> UseCases:
    service = make_service(tmp_path / "s", mode="multi-user", registry=registry)
    with service.lock:
        service.store.add_group({"name": "lab", "members": ["alice"]})
    return service




@pytest.fixture
def service(tmp_path: Path) -> Iterator[UseCases]:
    made = _service(tmp_path)
    yield made
    made.close()


@pytest.fixture
def as_(service: UseCases) -> Iterator[Callable[[Caller], TestClient]]:
    with as_callers(service) as client:
        yield client


def index_is_fresh(service: UseCases) -> None:
    """The index the store kept equals one built from its data now."""
    store = service.store
    with service.lock:
        kept = store._registry_index()
        fresh = RegistryIndex(store.storage.read() or {}, store.storage.rollbacks)
        assert kept.ids == fresh.ids
        assert kept.holders == fresh.holders
        assert kept.created == fresh.created
        assert kept.marked == fresh.marked
        assert kept.pinned_by == fresh.pinned_by


def readable(api: TestClient, tree_id: str) -> bool:
    code = api.head(f"/v1/trees/{tree_id}").status_code
    assert code in (200, 404)
    return code == 200


def test_tree_checks_follow_every_registry_change(
        service: UseCases, as_, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = as_(ALICE), as_(BOB)
    one, two, three = (upload_tree(alice, {"data.txt": f"version {n}\n".encode()})
                       for n in (1, 2, 3))
    assert not readable(bob, one)  # alice's upload: bob may not read it yet

    made = alice.post("/v1/datasets", json={"name": "points", "tree_id": one, "shared": True})
    assert made.status_code == 201, made.text
    assert readable(bob, one) and not readable(bob, two)
    index_is_fresh(service)

    pushed = alice.post("/v1/datasets/points/versions", json={"tree_id": two})
    assert pushed.status_code == 201, pushed.text
    assert readable(bob, two)
    tagged = alice.put("/v1/datasets/points/versions/2/tag", json={"tag": "best"})
    assert tagged.status_code == 200, tagged.text
    index_is_fresh(service)

    # Unshared: bob reads neither; shared with none of his groups.
    unshared = alice.put("/v1/datasets/points/sharing", json={"shared": False, "groups": []})
    assert unshared.status_code == 200, unshared.text
    assert not readable(bob, one) and not readable(bob, two)
    shared = alice.put("/v1/datasets/points/sharing", json={"shared": True, "groups": []})
    assert shared.status_code == 200, shared.text

    removed = alice.delete("/v1/datasets/points/versions/1")
    assert removed.status_code == 200, removed.text
    assert not readable(bob, one) and readable(bob, two)
    index_is_fresh(service)

    # A push whose write fails is rolled back: its tree is not readable through it.
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    monkeypatch.setattr(os, "fdatasync", disk_full)
    failed = alice.post("/v1/datasets/points/versions", json={"tree_id": three})
    monkeypatch.undo()
    assert failed.status_code >= 500, failed.text
    assert not readable(bob, three) and readable(bob, two)
    index_is_fresh(service)
    assert [v["version"] for v in alice.get("/v1/datasets/points").json()["versions"]] == [2]

    assert alice.delete("/v1/datasets/points").status_code == 200
    assert not readable(bob, two)
    index_is_fresh(service)
    assert readable(alice, two)  # her own upload, still


def _refused(response, *words: str) -> str:
    assert response.status_code == 409, response.text
    message: str = response.json()["error"]["message"]
    for word in words:
        assert word in message, message
    return message


def test_a_users_entries_are_bounded_until_one_is_removed(tmp_path: Path) -> None:
    service = _service(tmp_path, max_entries_per_user=2)
    try:
        with as_callers(service) as as_:
            alice, bob = as_(ALICE), as_(BOB)
            tree = upload_tree(alice, {"a.txt": b"a\n"})
            made = alice.post("/v1/datasets", json={"name": "d1", "tree_id": tree})
            assert made.status_code == 201, made.text
            # A group's entry counts against the member who created it.
            made = alice.post("/v1/models", json={"name": "m1", "tree_id": tree, "group": "lab"})
            assert made.status_code == 201, made.text
            message = _refused(alice.post("/v1/datasets", json={"name": "d2", "tree_id": tree}),
                               "alice has created 2", "registry.max_entries_per_user: 2",
                               "nai dataset rm NAME", "nai model rm NAME")
            assert "ask an admin" in message
            # Pushing a version to an existing entry is not a new entry.
            pushed = alice.post("/v1/datasets/d1/versions",
                                json={"tree_id": upload_tree(alice, {"b.txt": b"b\n"})})
            assert pushed.status_code == 201, pushed.text
            # Another user has room of their own.
            bobs = upload_tree(bob, {"c.txt": b"c\n"})
            assert bob.post("/v1/datasets", json={"name": "b1", "tree_id": bobs}).status_code == 201

            assert alice.delete("/v1/models/m1").status_code == 200
            made = alice.post("/v1/datasets", json={"name": "d2", "tree_id": tree})
            assert made.status_code == 201, made.text
    finally:
        service.close()


def test_an_entrys_versions_are_bounded_until_one_is_removed(tmp_path: Path) -> None:
    service = _service(tmp_path, max_versions_per_entry=2)
    try:
        with as_callers(service) as as_:
            alice = as_(ALICE)
            trees = [upload_tree(alice, {"v.txt": f"{n}\n".encode()}) for n in range(3)]
            made = alice.post("/v1/models", json={"name": "m", "tree_id": trees[0]})
            assert made.status_code == 201, made.text
            made = alice.post("/v1/models/m/versions", json={"tree_id": trees[1]})
            assert made.status_code == 201, made.text
            _refused(alice.post("/v1/models/m/versions", json={"tree_id": trees[2]}),
                     "model 'm' holds 2 versions", "registry.max_versions_per_entry: 2",
                     "nai model rm m@VERSION")
            assert alice.delete("/v1/models/m/versions/1").status_code == 200
            pushed = alice.post("/v1/models/m/versions", json={"tree_id": trees[2]})
            assert pushed.status_code == 201, pushed.text
            assert pushed.json()["version"] == 3
    finally:
        service.close()


def test_null_turns_the_bounds_off(tmp_path: Path) -> None:
    service = _service(tmp_path, max_entries_per_user=None, max_versions_per_entry=None)
    try:
        with as_callers(service) as as_:
            alice = as_(ALICE)
            tree = upload_tree(alice, {"a.txt": b"a\n"})
            for n in range(3):
                made = alice.post("/v1/datasets", json={"name": f"d{n}", "tree_id": tree})
                assert made.status_code == 201, made.text
    finally:
        service.close()


def test_blobs_of_a_readable_dataset_make_a_new_tree_without_upload(as_) -> None:
    """A tree of blobs the caller never sent is recorded when they are files of a
    dataset the caller may read (the registry walk that `readable_blobs` does), and
    refused as missing while the dataset is private."""
    alice, bob = as_(ALICE), as_(BOB)
    data = b"rows shared through a dataset\n"
    tree = upload_tree(alice, {"rows.csv": data})
    made = alice.post("/v1/datasets", json={"name": "rows", "tree_id": tree})
    assert made.status_code == 201, made.text
    manifest = {"entries": [{"path": "copy.csv", "size": len(data),
                             "sha256": hashlib.sha256(data).hexdigest()}]}
    assert bob.post("/v1/trees", json=manifest).status_code == 409  # private: missing
    shared = alice.put("/v1/datasets/rows/sharing", json={"shared": True, "groups": []})
    assert shared.status_code == 200, shared.text
    recorded = bob.post("/v1/trees", json=manifest)
    assert recorded.status_code == 201, recorded.text


def _kept(api: TestClient, kind: str, name: str) -> dict[int, bool]:
    shown = api.get(f"/v1/{kind}s/{name}")
    if shown.status_code == 404:
        return {}
    return {v["version"]: v["deleted"] for v in shown.json()["versions"]}


def test_lineage_pins_follow_every_registry_change(
        service: UseCases, as_, monkeypatch: pytest.MonkeyPatch) -> None:
    """Removals and collects read only the entries they remove from and those whose
    lineage names them (the index's pins): those must follow pushes, removals and a
    rolled-back write as a walk over every entry would."""
    alice = as_(ALICE)
    trees = [upload_tree(alice, {"f.txt": f"{n}\n".encode()}) for n in range(6)]
    assert alice.post("/v1/datasets", json={"name": "d", "tree_id": trees[0]}).status_code == 201
    assert alice.post("/v1/datasets/d/versions", json={"tree_id": trees[1]}).status_code == 201
    made = alice.post("/v1/models", json={"name": "m", "tree_id": trees[2],
                                          "metadata": {"lineage": {"datasets": ["d@1"]}}})
    assert made.status_code == 201, made.text
    index_is_fresh(service)

    # d@1 is named by m@1: kept, marked; every later collect must still see the pin.
    removed = alice.delete("/v1/datasets/d/versions/1").json()
    assert removed["kept"] == {"1": ["model m@1 names it in its lineage"]}
    assert service.registry.collect() == 0
    assert _kept(alice, "dataset", "d") == {1: True, 2: False}
    index_is_fresh(service)

    # m@2 names d@2; a push whose write fails is rolled back, pin included.
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    monkeypatch.setattr(os, "fdatasync", disk_full)
    failed = alice.post("/v1/models/m/versions", json={
        "tree_id": trees[3], "metadata": {"lineage": {"datasets": ["d@2"]}}})
    monkeypatch.undo()
    assert failed.status_code >= 500, failed.text
    index_is_fresh(service)
    gone = alice.delete("/v1/datasets/d/versions/2").json()  # nothing names it now
    assert gone["removed"] == [2] and gone["kept"] == {}
    assert _kept(alice, "dataset", "d") == {1: True}
    index_is_fresh(service)

    assert alice.post("/v1/datasets/d/versions", json={"tree_id": trees[4]}).status_code == 201
    pushed = alice.post("/v1/models/m/versions", json={
        "tree_id": trees[5], "metadata": {"lineage": {"datasets": ["d@3"]}}})
    assert pushed.status_code == 201, pushed.text
    index_is_fresh(service)
    assert alice.delete("/v1/datasets/d/versions/3").json()["kept"] == {
        "3": ["model m@2 names it in its lineage"]}

    # m@1 goes: d@1 is free and collected with it; d@3 still named by m@2.
    assert alice.delete("/v1/models/m/versions/1").json()["removed"] == [1]
    assert _kept(alice, "dataset", "d") == {3: True}
    index_is_fresh(service)
    assert alice.delete("/v1/models/m").json()["entry_removed"] is True
    assert _kept(alice, "dataset", "d") == {}  # its last version collected: gone
    index_is_fresh(service)
    with service.lock:
        assert service.store._registry_index().pinned_by == {}


def _doc(kind: str, name: str, *versions: dict[str, object]) -> dict[str, object]:
    return {"kind": kind, "name": name, "owner": {"user": "alice"}, "visibility": "private",
            "shared_with_groups": [], "description": "", "created_at": 0.0,
            "created_by": "alice", "next_version": len(versions) + 1, "versions": list(versions)}


def _v(n: int, *, deleted: bool = False, used_by: tuple[int, ...] = (),
       **lineage: list[str]) -> dict[str, object]:
    return {"version": n, "tag": None, "tree_id": "a" * 64, "size": 1, "files": 1,
            "deleted": deleted, "used_by": list(used_by),
            "metadata": {"lineage": lineage} if lineage else {}}


# Hand-made registries: pins across kinds and names, within one entry, chains, a
# dataset and a model of the same name, several pinners of one version (their order
# shows in the reasons), a lineage naming an entry that does not exist.
REGISTRIES = [
    [_doc("dataset", "d", _v(1, used_by=(5,)), _v(2), _v(3, deleted=True)),
     _doc("dataset", "e", _v(1, datasets=["d@1"]), _v(2, deleted=True, datasets=["d@2"])),
     _doc("model", "a", _v(1, datasets=["d@1", "e@2"])),
     _doc("model", "m", _v(1, datasets=["d@1"], models=["a@1"]), _v(2, models=["m@1"]),
          _v(3, deleted=True, models=["m@2"])),
     _doc("model", "z", _v(1, models=["ghost@1"]))],
    [_doc("dataset", "x", _v(1, deleted=True), _v(2, used_by=(6,))),
     _doc("model", "x", _v(1, datasets=["x@2"]), _v(2, deleted=True, models=["x@1"]),
          _v(3, models=["x@2"], datasets=["x@1"]))],
    [_doc("model", "chain", _v(1, deleted=True), _v(2, deleted=True, models=["chain@1"]),
          _v(3, models=["chain@2"])),
     _doc("dataset", "lone", _v(1, deleted=True, used_by=(5, 6)))],
]


def _old_plan(entries: list[dict[str, object]], kind: str, name: str, numbers: set[int],
              active: set[int]) -> rules.Removal:
    """The removal as it was decided before: from deep copies of every entry."""
    return rules.plan_removal(copy.deepcopy(entries), kind, name, numbers, active)


@pytest.mark.parametrize("registry", REGISTRIES)
def test_removal_decisions_match_a_walk_over_every_entry(
        service: UseCases, registry: list[dict[str, object]]) -> None:
    store = service.store
    with service.lock:
        for doc in registry:
            store.put_registry_entry(str(doc["kind"]), doc)
        listed = [d for kind in rules.KINDS for d in store.list_registry_entries(kind)]
        for active in (set(), {5}, {5, 6}):
            for doc in registry:
                kind, name = str(doc["kind"]), str(doc["name"])
                numbers = [int(v["version"]) for v in doc["versions"]]  # type: ignore[attr-defined]
                for size in range(1, len(numbers) + 1):
                    for chosen in itertools.combinations(numbers, size):
                        near = store.stored_registry_entries_pinning([(kind, name)])
                        assert (rules.plan_removal(near, kind, name, set(chosen), active)
                                == _old_plan(listed, kind, name, set(chosen), active))
            near = store.stored_registry_entries_pinning(store.registry_marked())
            assert rules.collectable(near, active) == rules.collectable(listed, active)
        # Read, never changed: the stored entries are as they were put.
        assert [d for kind in rules.KINDS for d in store.list_registry_entries(kind)] == listed
    index_is_fresh(service)
