"""Read rights on trees and blobs, in process with several callers: a tree id or a
digest seen somewhere (the public job list, a model's lineage) is a name, not a key.
Another user's tree is as unknown as one never sent; their blobs are "missing" until
the caller sends the same bytes; a tree is readable through what the caller may read."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.app.accounts import Caller
from nai_server.app.use_cases import UseCases
from nai_server.core.spec import spec_from_dict
from nai_server.protocol import Invalid, NotFound
from nai_server.store.pack import SKIP_CHECK_BYTES
from nai_server.testing import as_callers, make_service, pack, upload_tree

ALICE = Caller("alice", uid=61_000, admin=False, groups=("lab",))
BOB = Caller("bob", uid=61_001, admin=False)
CAROL = Caller("carol", uid=61_002, admin=False, groups=("lab",))
ADMIN = Caller("boss", uid=61_003, admin=True)
SECRET = b"alice's private data\n"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entries(files: dict[str, bytes]) -> list[dict[str, object]]:
    return [{"path": p, "size": len(d), "sha256": digest(d)} for p, d in files.items()]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[UseCases]:
    made = make_service(tmp_path / "s", mode="multi-user")
    yield made
    made.close()


@pytest.fixture
def as_(service: UseCases) -> Iterator[Callable[[Caller], TestClient]]:
    """A client that calls the API in process as the given caller."""
    with as_callers(service) as client:
        yield client


def unreadable(api: TestClient, tree_id: str) -> None:
    """Every tree route answers as for an id never sent."""
    assert api.head(f"/v1/trees/{tree_id}").status_code == 404
    for response in (api.get(f"/v1/trees/{tree_id}"),
                     api.get(f"/v1/trees/{tree_id}/archive"),
                     api.get(f"/v1/trees/{tree_id}/file", params={"path": "data.txt"},
                             headers={"Range": "bytes=3-"}),
                     api.post(f"/v1/trees/{tree_id}/archive", json={"paths": ["data.txt"]})):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["message"] == f"no tree {tree_id!r} on this server"


def test_another_users_tree_is_unknown_even_with_its_id(as_) -> None:
    tree_id = upload_tree(as_(ALICE), {"data.txt": SECRET})
    assert as_(ALICE).head(f"/v1/trees/{tree_id}").status_code == 200
    assert SECRET in as_(ALICE).get(f"/v1/trees/{tree_id}/archive").content
    unreadable(as_(BOB), tree_id)
    unreadable(as_(BOB), "0" * 64)  # the same answer as for a tree that does not exist
    assert as_(ADMIN).get(f"/v1/trees/{tree_id}").status_code == 200


def test_missing_answers_for_the_caller_alone(as_) -> None:
    upload_tree(as_(ALICE), {"data.txt": SECRET})
    ask = {"digests": [digest(SECRET)]}
    assert as_(ALICE).post("/v1/blobs/missing", json=ask).json() == {"missing": []}
    assert as_(BOB).post("/v1/blobs/missing", json=ask).json() == {"missing": [digest(SECRET)]}
    assert as_(ADMIN).post("/v1/blobs/missing", json=ask).json() == {"missing": []}


def test_a_tree_of_another_users_blobs_is_refused_as_missing_without_sizes(as_) -> None:
    upload_tree(as_(ALICE), {"data.txt": SECRET})
    for size in (len(SECRET), 1):  # right and wrong size: both only "missing"
        answer = as_(BOB).post("/v1/trees", json={"entries": [
            {"path": "x", "size": size, "sha256": digest(SECRET)}]})
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"]["details"] == {"missing": [digest(SECRET)]}
        assert str(len(SECRET)) not in answer.json()["error"]["message"]


def test_sending_the_same_bytes_makes_them_the_callers(service: UseCases, as_) -> None:
    big = bytes(range(256)) * (SKIP_CHECK_BYTES // 256 + 1)  # only hashed when stored
    files = {"data.txt": SECRET, "big.bin": big}
    tree_id = upload_tree(as_(ALICE), files)
    stored = sorted(p for p in (service.blobs.root / "sha256").rglob("*") if p.is_file())
    again = upload_tree(as_(BOB), files)  # the client's way: the blobs, then the tree
    assert again == tree_id
    assert sorted(p for p in (service.blobs.root / "sha256").rglob("*")
                  if p.is_file()) == stored  # stored once
    ask = {"digests": [digest(SECRET), digest(big)]}
    assert as_(BOB).post("/v1/blobs/missing", json=ask).json() == {"missing": []}
    assert SECRET in as_(BOB).get(f"/v1/trees/{tree_id}/archive").content


def test_a_tree_of_blobs_all_uploaded_by_the_caller_is_readable(as_) -> None:
    tree_id = upload_tree(as_(ALICE), {"data.txt": SECRET})
    as_(BOB).post("/v1/blobs", content=pack({digest(SECRET): SECRET}))
    assert as_(BOB).get(f"/v1/trees/{tree_id}").status_code == 200


def test_private_dataset_tree_cannot_be_fetched_registered_or_run(service: UseCases, as_
                                                                   ) -> None:
    tree_id = upload_tree(as_(ALICE), {"data.txt": SECRET})
    code = upload_tree(as_(ALICE), {"train.py": b"print(1)\n"})
    made = as_(ALICE).post("/v1/datasets", json={"name": "secret", "tree_id": tree_id})
    assert made.status_code == 201, made.text
    job = service.jobs.submit(ALICE, spec_from_dict(
        {"command": "python train.py", "dataset": "secret"}), code)
    assert job.dataset is not None and job.dataset["tree_id"] == tree_id

    seen = service.jobs.show(BOB, job.id)
    assert seen.dataset == {"name": "secret", "version": 1} and seen.code_tree is None
    assert tree_id not in str(as_(BOB).get("/v1/jobs").json())
    assert service.jobs.show(ALICE, job.id).dataset["tree_id"] == tree_id

    unreadable(as_(BOB), tree_id)
    unreadable(as_(BOB), code)
    stolen = as_(BOB).post("/v1/datasets", json={"name": "mine", "tree_id": tree_id})
    assert stolen.status_code == 400 and "no tree" in stolen.json()["error"]["message"]
    with pytest.raises(Invalid, match="not on the server"):
        service.jobs.submit(BOB, spec_from_dict({"command": "ls"}), tree_id)
    with pytest.raises(Invalid, match="not on the server"):
        service.jobs.submit(BOB, spec_from_dict({"command": "ls"}), code)

    # Shared, the dataset's tree is readable (and usable) through it; the code is not.
    shared = as_(ALICE).put("/v1/datasets/secret/sharing", json={"shared": True, "groups": []})
    assert shared.status_code == 200, shared.text
    assert SECRET in as_(BOB).get(f"/v1/trees/{tree_id}/archive").content
    assert as_(BOB).post("/v1/datasets", json={"name": "copy", "tree_id": tree_id}
                         ).status_code == 201
    service.jobs.submit(BOB, spec_from_dict({"command": "ls"}), tree_id)
    unreadable(as_(BOB), code)
    # Its blobs count as Bob's for a tree of his own.
    mixed = as_(BOB).post("/v1/trees", json={"entries": entries({"a/data.txt": SECRET})})
    assert mixed.status_code == 201, mixed.text


def test_those_who_may_read_a_job_read_its_code(service: UseCases, as_) -> None:
    code = upload_tree(as_(ALICE), {"train.py": b"print(2)\n"})
    job = service.jobs.submit(ALICE, spec_from_dict({"command": "ls", "group": "lab"}), code)
    assert service.jobs.show(CAROL, job.id).code_tree == code
    assert as_(CAROL).get(f"/v1/trees/{code}").status_code == 200
    service.jobs.submit(CAROL, spec_from_dict({"command": "ls"}), code)
    unreadable(as_(BOB), code)


def test_sharing_a_model_does_not_share_the_code_that_made_it(service: UseCases, as_) -> None:
    code = upload_tree(as_(ALICE), {"train.py": b"print('how')\n"})
    weights = upload_tree(as_(ALICE), {"w.bin": b"\x01" * 100})
    job = service.jobs.submit(ALICE, spec_from_dict({"command": "ls"}), code)
    service.registry.register_output(
        ALICE, "m", weights, group=None, description="",
        metadata={"lineage": {"job": job.id, "code_tree": code}})
    with pytest.raises(NotFound):  # private: neither its files nor its code run for Bob
        service.jobs.submit(BOB, spec_from_dict({"command": "ls", "model": "m"}), None,
                            code_from_model=True)
    as_(ALICE).put("/v1/models/m/sharing", json={"shared": True, "groups": []})

    def lineage(caller: Caller) -> dict:
        answer = as_(caller).get("/v1/models/m/versions/1")
        assert answer.status_code == 200, answer.text
        listed = as_(caller).get("/v1/models/m").json()["versions"][0]["metadata"]
        assert listed["lineage"] == answer.json()["metadata"]["lineage"]
        return dict(answer.json()["metadata"]["lineage"])

    assert lineage(ALICE)["code_tree"] == code
    assert lineage(BOB) == {"job": job.id, "code_tree": None}
    assert as_(BOB).get(f"/v1/trees/{weights}").status_code == 200
    unreadable(as_(BOB), code)
    # Running the model's own files is running what was shared: allowed.
    ran = service.jobs.submit(BOB, spec_from_dict({"command": "ls", "model": "m"}), None,
                              code_from_model=True)
    assert ran.code_tree == weights


def test_a_registered_job_output_is_its_owners(service: UseCases, as_) -> None:
    """The runtime registers a job's outputs for its owner without a tree claim."""
    tree_id = service.blobs.put_tree(service.blobs.get_tree(
        upload_tree(as_(ADMIN), {"out.txt": b"result"})))
    version = service.registry.register_output(ALICE, "out", tree_id, group=None,
                                               description="", metadata={})
    assert version.tree_id == tree_id
    assert as_(ALICE).get(f"/v1/trees/{tree_id}").status_code == 200
    unreadable(as_(BOB), tree_id)
