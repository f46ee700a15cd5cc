"""Datasets and models through the API in process: versions, tags, @latest, removal
(kept while a job or a lineage still needs a version), sharing and errors."""

from __future__ import annotations

import os

import pytest
from starlette.testclient import TestClient

from nai_server.app.accounts import Caller
from nai_server.app.use_cases import UseCases
from nai_server.protocol import Invalid, NotFound, RegistryCreate
from nai_server.testing import upload_tree

KINDS = ["datasets", "models"]


@pytest.fixture
def trees(api: TestClient) -> list[str]:
    return [upload_tree(api, {"data.bin": bytes([i]) * (100 * (i + 1)), "README": b"v%d" % i})
            for i in range(4)]


def me(service: UseCases) -> Caller:
    return Caller(service.accounts.owner, os.getuid(), True, ())


def error(response) -> str:
    return str(response.json()["error"]["message"])


@pytest.mark.parametrize("kind", KINDS)
def test_create_push_show_and_latest(api: TestClient, trees: list[str], kind: str) -> None:
    created = api.post(f"/v1/{kind}", json={"name": "cifar10", "tree_id": trees[0],
                                            "description": "small images", "tag": "first"})
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/v1/{kind}/cifar10"
    body = created.json()
    assert body["kind"] == kind[:-1] and body["owner"] == {"user": me_name(api)}
    assert body["visibility"] == "private" and body["latest"] == 1
    assert body["versions"][0] | {"created_at": 0} == {
        "version": 1, "tag": "first", "tree_id": trees[0], "size": 102, "files": 2,
        "created_at": 0, "created_by": me_name(api), "description": "small images",
        "metadata": {}, "deleted": False, "used_by": []}

    pushed = api.post(f"/v1/{kind}/cifar10/versions", json={"tree_id": trees[1]})
    assert pushed.status_code == 201 and pushed.json()["version"] == 2
    assert pushed.headers["location"] == f"/v1/{kind}/cifar10/versions/2"
    listing = api.get(f"/v1/{kind}").json()
    assert [(e["name"], e["latest"], e["versions"], e["size"]) for e in listing] == [
        ("cifar10", 2, 2, 202)]
    for ref, version in (("latest", 2), ("1", 1), ("2", 2), ("first", 1)):
        got = api.get(f"/v1/{kind}/cifar10/versions/{ref}")
        assert got.json()["version"] == version, ref
    shown = api.get(f"/v1/{kind}/cifar10").json()
    assert [v["version"] for v in shown["versions"]] == [1, 2] and shown["may_write"]


def me_name(api: TestClient) -> str:
    return str(api.get("/v1/me").json()["user"])


def test_tags_move_clear_and_are_never_numbers(api: TestClient, trees: list[str]) -> None:
    api.post("/v1/datasets", json={"name": "d", "tree_id": trees[0]})
    api.post("/v1/datasets/d/versions", json={"tree_id": trees[1], "tag": "best"})
    assert api.get("/v1/datasets/d/versions/best").json()["version"] == 2
    moved = api.put("/v1/datasets/d/versions/1/tag", json={"tag": "best"})
    assert moved.status_code == 200 and moved.json()["tag"] == "best"
    assert api.get("/v1/datasets/d/versions/best").json()["version"] == 1
    assert api.get("/v1/datasets/d/versions/2").json()["tag"] is None
    # A new version may take a tag too, moving it again.
    api.post("/v1/datasets/d/versions", json={"tree_id": trees[2], "tag": "best"})
    assert api.get("/v1/datasets/d/versions/best").json()["version"] == 3
    cleared = api.put("/v1/datasets/d/versions/best/tag", json={"tag": None})
    assert cleared.json()["version"] == 3 and cleared.json()["tag"] is None
    assert api.get("/v1/datasets/d/versions/best").status_code == 404
    for bad in ("3", "latest", "-x", "a b"):
        response = api.put("/v1/datasets/d/versions/1/tag", json={"tag": bad})
        assert response.status_code == 400, bad
    missing = api.get("/v1/datasets/d/versions/9")
    assert missing.status_code == 404 and "versions: 1, 2, 3" in error(missing)


def test_versions_never_reuse_numbers(api: TestClient, trees: list[str]) -> None:
    api.post("/v1/models", json={"name": "m", "tree_id": trees[0]})
    api.post("/v1/models/m/versions", json={"tree_id": trees[1]})
    removed = api.delete("/v1/models/m/versions/latest").json()
    assert removed["removed"] == [2] and not removed["entry_removed"]
    assert api.post("/v1/models/m/versions", json={"tree_id": trees[2]}).json()["version"] == 3


@pytest.mark.parametrize("kind", KINDS)
def test_pushing_the_latest_versions_tree_again_records_nothing(
        api: TestClient, trees: list[str], kind: str) -> None:
    api.post(f"/v1/{kind}", json={"name": "d", "tree_id": trees[0]})
    api.post(f"/v1/{kind}/d/versions", json={"tree_id": trees[1], "tag": "best",
                                             "description": "second"})
    same = api.post(f"/v1/{kind}/d/versions", json={"tree_id": trees[1], "tag": "other",
                                                    "description": "again"})
    assert same.status_code == 200, same.text
    assert same.headers["location"] == f"/v1/{kind}/d/versions/2"
    body = same.json()
    assert (body["version"], body["unchanged"], body["tag"], body["description"]) == (
        2, True, "best", "second")
    shown = api.get(f"/v1/{kind}/d").json()
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert api.get(f"/v1/{kind}/d/versions/other").status_code == 404

    # Going back to an older version's files is a change; asking for it records anyway.
    back = api.post(f"/v1/{kind}/d/versions", json={"tree_id": trees[0]})
    assert back.status_code == 201
    assert (back.json()["version"], back.json()["unchanged"]) == (3, False)
    forced = api.post(f"/v1/{kind}/d/versions", json={"tree_id": trees[0],
                                                      "allow_same": True})
    assert forced.status_code == 201 and forced.json()["version"] == 4
    assert not forced.json()["unchanged"]
    # Only the latest live version counts: once it is removed, its tree is new again.
    api.delete(f"/v1/{kind}/d/versions/4")
    again = api.post(f"/v1/{kind}/d/versions", json={"tree_id": trees[0]})
    assert again.json()["unchanged"] and again.json()["version"] == 3


def test_create_errors(api: TestClient, trees: list[str]) -> None:
    unknown_tree = api.post("/v1/datasets", json={"name": "d", "tree_id": "0" * 64})
    assert unknown_tree.status_code == 400 and "upload the folder first" in error(unknown_tree)
    bad_name = api.post("/v1/datasets", json={"name": "../d", "tree_id": trees[0]})
    assert bad_name.status_code == 400 and "name" in error(bad_name)
    no_group = api.post("/v1/datasets", json={"name": "d", "tree_id": trees[0],
                                              "group": "nosuch"})
    assert no_group.status_code == 400 and "nosuch" in error(no_group)
    assert api.post("/v1/datasets", json={"name": "d", "tree_id": trees[0]}).status_code == 201
    dup = api.post("/v1/datasets", json={"name": "d", "tree_id": trees[1]})
    assert dup.status_code == 409 and "nai dataset push d DIR" in error(dup)
    # Names are per kind: a model may share a dataset's name.
    assert api.post("/v1/models", json={"name": "d", "tree_id": trees[0]}).status_code == 201
    huge = api.post("/v1/models/d/versions",
                    json={"tree_id": trees[1], "metadata": {"x": "y" * 70_000}})
    assert huge.status_code == 400 and "KiB" in error(huge)
    assert api.post("/v1/models/nope/versions", json={"tree_id": trees[1]}).status_code == 404
    assert api.get("/v1/datasets/nope").status_code == 404
    assert "nai dataset list" in error(api.get("/v1/datasets/nope"))


def test_group_ownership_and_sharing(api: TestClient, service: UseCases,
                                     trees: list[str]) -> None:
    api.post("/v1/groups", json={"name": "vision"})
    api.post("/v1/groups/vision/members", json={"user": me_name(api)})
    made = api.post("/v1/datasets", json={"name": "imgs", "tree_id": trees[0],
                                          "group": "vision", "shared": True})
    assert made.status_code == 201 and made.json()["owner"] == {"group": "vision"}
    assert made.json()["visibility"] == "shared"
    shared = api.put("/v1/datasets/imgs/sharing", json={"shared": False,
                                                         "groups": ["admins", "admins"]})
    assert shared.status_code == 200
    assert (shared.json()["visibility"], shared.json()["shared_with_groups"]) == (
        "private", ["admins"])
    unknown = api.put("/v1/datasets/imgs/sharing", json={"groups": ["ghosts"]})
    assert unknown.status_code == 400 and "ghosts" in error(unknown)
    # Method override reaches these routes too.
    override = api.post("/v1/datasets/imgs/sharing", json={"shared": True},
                        headers={"X-HTTP-Method-Override": "PUT"})
    assert override.json()["visibility"] == "shared"


def _queued_job(api: TestClient) -> int:
    job = api.post("/v1/jobs", json={"spec": {"command": "sleep 60", "gpus": 0}})
    assert job.status_code == 201, job.text
    return int(job.json()["id"])


def test_remove_keeps_versions_used_by_unfinished_jobs(api: TestClient, service: UseCases,
                                                      trees: list[str]) -> None:
    api.post("/v1/datasets", json={"name": "d", "tree_id": trees[0], "tag": "old"})
    api.post("/v1/datasets/d/versions", json={"tree_id": trees[1]})
    job = _queued_job(api)  # never ticked: it stays queued, i.e. not finished
    used = service.registry.resolve(me(service), "dataset", "d@old")
    assert (used.name, used.version, used.tree_id) == ("d", 1, trees[0])
    service.registry.record_use("dataset", "d", used.version, job)
    service.registry.record_use("dataset", "d", used.version, job)  # idempotent
    assert api.get("/v1/datasets/d/versions/1").json()["used_by"] == [job]

    answer = api.delete("/v1/datasets/d")
    assert answer.status_code == 200
    body = answer.json()
    assert body["removed"] == [2] and not body["entry_removed"]
    assert body["kept"] == {"1": [f"job {job} uses it and has not finished"]}
    assert "kept dataset d@1, marked for deletion" in body["message"]

    # Marked: shown as such, never handed out again, not "latest", tag freed.
    shown = api.get("/v1/datasets/d").json()
    assert shown["latest"] is None
    assert [(v["version"], v["deleted"], v["tag"]) for v in shown["versions"]] == [
        (1, True, None)]
    assert api.get("/v1/datasets/d/versions/latest").status_code == 404
    assert api.get("/v1/datasets/d/versions/1").json()["deleted"] is True
    with pytest.raises(NotFound, match="kept only while"):
        service.registry.resolve(me(service), "dataset", "d@1")
    listing = api.get("/v1/datasets").json()
    assert [(e["name"], e["latest"], e["versions"]) for e in listing] == [("d", None, 0)]

    # Still kept while the job has not finished; gone once it has.
    assert service.registry.collect() == 0
    assert api.delete(f"/v1/jobs/{job}").json()["state"] == "cancelled"  # which collects
    assert api.get("/v1/datasets/d").status_code == 404


def test_removal_of_finished_job_versions_and_last_version(api: TestClient, service: UseCases,
                                                         trees: list[str]) -> None:
    api.post("/v1/models", json={"name": "m", "tree_id": trees[0]})
    api.post("/v1/models/m/versions", json={"tree_id": trees[1]})
    job = _queued_job(api)
    service.registry.record_use("model", "m", 2, job)
    api.delete(f"/v1/jobs/{job}")  # finished: no longer holds the version
    gone = api.delete("/v1/models/m/versions/2").json()
    assert gone["removed"] == [2] and gone["kept"] == {}
    last = api.delete("/v1/models/m/versions/1").json()
    assert last["removed"] == [1] and last["entry_removed"]
    assert "model m is gone" in last["message"]
    assert api.get("/v1/models/m").status_code == 404 and api.get("/v1/models").json() == []
    with pytest.raises(NotFound):
        service.registry.record_use("model", "m", 1, job)


def test_lineage_pins_versions_until_the_model_goes(api: TestClient, service: UseCases,
                                                    trees: list[str]) -> None:
    api.post("/v1/datasets", json={"name": "cifar", "tree_id": trees[0]})
    api.post("/v1/datasets/cifar/versions", json={"tree_id": trees[1]})
    api.post("/v1/models", json={"name": "base", "tree_id": trees[2]})
    made = api.post("/v1/models", json={
        "name": "tuned", "tree_id": trees[3],
        "metadata": {"metrics": {"acc": 0.9}, "lineage": {"dataset": "cifar",
                                                          "models": ["base@1"], "job": 7}}})
    assert made.status_code == 201, made.text
    # References are pinned to exact versions when the version is recorded.
    assert made.json()["versions"][0]["metadata"] == {
        "metrics": {"acc": 0.9},
        "lineage": {"datasets": ["cifar@2"], "models": ["base@1"], "job": 7}}

    kept = api.delete("/v1/datasets/cifar").json()
    assert kept["removed"] == [1]
    assert kept["kept"] == {"2": ["model tuned@1 names it in its lineage"]}
    assert api.delete("/v1/models/base").json()["kept"] == {
        "1": ["model tuned@1 names it in its lineage"]}
    # A version's own entry does not keep it: removing all of `tuned` takes it, and
    # what its lineage held goes with it.
    assert api.delete("/v1/models/tuned").json()["entry_removed"] is True
    assert api.get("/v1/datasets").json() == [] and api.get("/v1/models").json() == []


def test_lineage_within_one_model_does_not_block_its_removal(api: TestClient,
                                                            trees: list[str]) -> None:
    api.post("/v1/models", json={"name": "m", "tree_id": trees[0]})
    api.post("/v1/models/m/versions", json={"tree_id": trees[1],
                                            "metadata": {"lineage": {"model": "m@1"}}})
    one = api.delete("/v1/models/m/versions/1").json()
    assert one["kept"] == {"1": ["model m@2 names it in its lineage"]}
    both = api.delete("/v1/models/m").json()
    assert both["removed"] == [1, 2] and both["entry_removed"]


def test_bad_lineage_is_refused(api: TestClient, trees: list[str]) -> None:
    unknown = api.post("/v1/models", json={"name": "m", "tree_id": trees[0],
                                           "metadata": {"lineage": {"dataset": "nope@1"}}})
    assert unknown.status_code == 400 and "lineage.datasets" in error(unknown)
    shape = api.post("/v1/models", json={"name": "m", "tree_id": trees[0],
                                         "metadata": {"lineage": {"datasets": [3]}}})
    assert shape.status_code == 400
    assert api.post("/v1/models", json={"name": "m", "tree_id": trees[0],
                                        "metadata": {"lineage": "x"}}).status_code == 400


def test_resolve_refs(api: TestClient, service: UseCases, trees: list[str]) -> None:
    api.post("/v1/datasets", json={"name": "d", "tree_id": trees[0], "tag": "gold"})
    api.post("/v1/datasets/d/versions", json={"tree_id": trees[1]})
    who = me(service)
    resolve = service.registry.resolve
    assert resolve(who, "dataset", "d").version == 2
    assert resolve(who, "dataset", "d@latest").version == 2
    assert resolve(who, "dataset", "d@gold").tree_id == trees[0]
    assert resolve(who, "dataset", "d@2").ref == "d@2"
    for bad in ("d@", "@1", "../d", ""):
        with pytest.raises(Invalid):
            resolve(who, "dataset", bad)
    with pytest.raises(NotFound):
        resolve(who, "dataset", "d@7")
    with pytest.raises(NotFound):
        resolve(who, "model", "d")


def test_openapi_lists_both_registries(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for kind in KINDS:
        assert {f"/v1/{kind}", f"/v1/{kind}/{{name}}", f"/v1/{kind}/{{name}}/versions",
                f"/v1/{kind}/{{name}}/versions/{{ref}}", f"/v1/{kind}/{{name}}/sharing",
                f"/v1/{kind}/{{name}}/versions/{{ref}}/tag"} <= set(paths)


def test_registries_survive_a_restart(tmp_path) -> None:
    from nai_server.testing import make_service

    first = make_service(tmp_path / "state")
    tree = first.blobs.put_tree(())
    first.registry.create(me(first), "model", RegistryCreate(name="m", tree_id=tree, tag="t"))
    first.registry.record_use("model", "m", 1, 42)
    first.close()
    again = make_service(tmp_path / "state")
    try:
        shown = again.registry.show(me(again), "model", "m")
        assert [(v.version, v.tag, v.used_by) for v in shown.versions] == [(1, "t", [42])]
    finally:
        again.close()
