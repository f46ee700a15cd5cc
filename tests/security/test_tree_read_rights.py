"""Issue 13, item 2: trees and blobs have read rights. Through the real daemon, as real
non-root unix users: Bob knows the tree id of Alice's private dataset (the public job
list used to show it) and the digests of its files, and still cannot fetch the tree,
run it as his code, register it as his own dataset, or build a tree of its blobs; asked
which blobs he lacks, the server says he lacks hers. Sending the same bytes himself
works, and then they are his to use."""

from __future__ import annotations

import hashlib

from tests.integration.conftest import Daemon, needs_root, upload_as

pytestmark = [needs_root]

SECRET = {"labels.csv": b"id,label\n1,secret\n", "train/a.bin": b"\x07" * 5000}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_another_users_private_dataset_stays_hers(daemon: Daemon, make_user) -> None:
    alice, bob = make_user(), make_user()
    for user in (alice, bob):
        assert daemon.admin("user", "add", user.name).returncode == 0
    tree = upload_as(daemon, alice, SECRET)
    code = upload_as(daemon, alice, {"train.py": b"print('alice')\n"})
    made = daemon.as_user(alice, "POST", "/v1/datasets", {"name": "private", "tree_id": tree})
    assert made.status == 201, made.body
    job = daemon.as_user(alice, "POST", "/v1/jobs", {
        "spec": {"command": "true", "gpus": 0, "dataset": "private"}, "code_tree": code})
    assert job.status == 201, job.body

    # The public job list names the dataset, not the tree that downloads it.
    listed = daemon.as_user(bob, "GET", "/v1/jobs")
    assert listed.status == 200 and tree.encode() not in listed.body
    assert code.encode() not in listed.body
    assert daemon.as_user(alice, "GET", f"/v1/jobs/{job.json()['id']}").json()[
        "dataset"]["tree_id"] == tree

    # Knowing the ids anyway, Bob gets what he would get for ids never sent.
    unknown = "f" * 64
    for tree_id in (tree, code):
        for method, path, body in (
                ("HEAD", f"/v1/trees/{tree_id}", None),
                ("GET", f"/v1/trees/{tree_id}", None),
                ("GET", f"/v1/trees/{tree_id}/archive", None),
                ("POST", f"/v1/trees/{tree_id}/archive", {"paths": ["labels.csv"]})):
            got = daemon.as_user(bob, method, path, body)
            never = daemon.as_user(bob, method, path.replace(tree_id, unknown), body)
            assert got.status == never.status == 404, (method, path, got.body)
            assert got.body.replace(tree_id.encode(), unknown.encode()) == never.body
            assert b"secret" not in got.body
        ran = daemon.as_user(bob, "POST", "/v1/jobs", {
            "spec": {"command": "cat labels.csv", "gpus": 0}, "code_tree": tree_id})
        assert ran.status == 400 and "not on the server" in ran.json()["error"]["message"]
        stolen = daemon.as_user(bob, "POST", "/v1/datasets", {"name": f"mine-{tree_id[:6]}",
                                                              "tree_id": tree_id})
        assert stolen.status == 400 and "no tree" in stolen.json()["error"]["message"]

    # Her blobs are "missing" for him, and a tree of them is refused as missing, with
    # no size: neither the right nor a wrong size tells him anything.
    digests = sorted(sha(d) for d in SECRET.values())
    lacks = daemon.as_user(bob, "POST", "/v1/blobs/missing", {"digests": digests})
    assert sorted(lacks.json()["missing"]) == digests
    for size in (len(SECRET["labels.csv"]), 1):
        forged = daemon.as_user(bob, "POST", "/v1/trees", {"entries": [
            {"path": "x.csv", "size": size, "sha256": sha(SECRET["labels.csv"])}]})
        assert forged.status == 409, forged.body
        assert forged.json()["error"]["details"] == {"missing": [sha(SECRET["labels.csv"])]}
        assert str(len(SECRET["labels.csv"])).encode() not in forged.body

    # The same bytes, sent by Bob, are his: stored once, and his to use.
    blobs = daemon.state / "blobs" / "sha256"
    before = sorted(p for p in blobs.rglob("*") if p.is_file())
    assert upload_as(daemon, bob, SECRET) == tree
    assert sorted(p for p in blobs.rglob("*") if p.is_file()) == before
    assert daemon.as_user(bob, "POST", "/v1/blobs/missing", {"digests": digests}).json() == {
        "missing": []}
    fetched = daemon.as_user(bob, "GET", f"/v1/trees/{tree}/archive")
    assert fetched.status == 200 and SECRET["labels.csv"] in fetched.body
    assert daemon.as_user(bob, "POST", "/v1/datasets", {"name": "bobs", "tree_id": tree}
                          ).status == 201
    # Alice's code, which he never sent, is still not his.
    assert daemon.as_user(bob, "GET", f"/v1/trees/{code}").status == 404
