"""`/v1/store/verify` in process: admins only; it runs in the background while the API
answers, and its report names what a lost or rotten blob breaks."""

from __future__ import annotations

import hashlib
import os
import pwd
import threading
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app.use_cases import UseCases
from nai_server.testing import AsPeer, make_service, upload_tree, wait_for


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hold_verifier(service: UseCases) -> tuple[threading.Event, threading.Event]:
    """Make the next verification stop at its first pause: (paused, set once it is
    held there; go, to set to let it on)."""
    paused, go = threading.Event(), threading.Event()
    service.verifier.rate = 1.0

    def pause(_: float) -> None:
        paused.set()
        go.wait(20)

    service.verifier._pause = pause
    return paused, go


def test_a_plain_user_may_not_verify_the_store(tmp_path: Path) -> None:
    try:
        account = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("needs a unix account other than root (no `nobody` here)")
    service = make_service(tmp_path / "state", mode="multi-user")
    try:
        service.accounts.add_user(account.pw_name)
        app = AsPeer(create_app(service), uid=account.pw_uid, gid=account.pw_gid)
        with TestClient(app, base_url="http://nai") as user:
            for answer in (user.post("/v1/store/verify", json={"repair": True}),
                           user.get("/v1/store/verify")):
                assert answer.status_code == 403, answer.text
                assert "not an admin" in answer.json()["error"]["message"]
        assert service.verifier.report()["state"] == "never"  # nothing started
    finally:
        service.close()


def test_verify_runs_in_the_background_and_reports_the_damage(
        api: TestClient, service: UseCases) -> None:
    tree = upload_tree(api, {"a.txt": b"alpha", "b.txt": b"beta"})
    job = api.post("/v1/jobs", json={"spec": {"command": "true"}, "code_tree": tree}).json()
    service.blobs.path_of(sha(b"beta")).unlink()
    assert api.get("/v1/store/verify").json()["state"] == "never"

    # Held at its first pause: the API answers, and a second start is refused.
    paused, go = hold_verifier(service)
    started = api.post("/v1/store/verify", json={"repair": True})
    assert started.status_code == 202 and started.json()["state"] == "running"
    assert paused.wait(20)
    assert api.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert api.get("/v1/store/verify").json()["state"] == "running"
    again = api.post("/v1/store/verify", json={})
    assert again.status_code == 409 and "running already" in again.json()["error"]["message"]
    service.verifier.rate = 0.0
    go.set()

    wait_for(lambda: api.get("/v1/store/verify").json()["state"] != "running",
             what="the verification to end")
    report = api.get("/v1/store/verify").json()
    assert report["state"] == "done" and not report["clean"] and report["repair"]
    assert [(b["digest"], b["problem"], b["owners"]) for b in report["blobs"]] == [
        (sha(b"beta"), "missing", [pwd.getpwuid(os.getuid()).pw_name])]
    assert [(t["id"], t["files"]) for t in report["trees"]] == [(tree, ["b.txt"])]
    assert [(j["id"], j["trees"][0]["role"]) for j in report["jobs"]] == [(job["id"], "code")]


def test_gc_keeps_what_the_daemon_names_and_never_runs_beside_a_verification(
        api: TestClient, service: UseCases) -> None:
    used = upload_tree(api, {"code.py": b"print(1)"})
    noted = upload_tree(api, {"noted.txt": b"named in a setting only"})
    unused = upload_tree(api, {"unused.txt": b"nobody names this"})
    api.post("/v1/jobs", json={"spec": {"command": "true"}, "code_tree": used})
    with service.lock:  # a field gc was never told of still counts
        service.store.set_setting("someday", {"deep": [noted]})
    for path in (service.blobs.root / "trees").rglob("*.json"):
        os.utime(path, (1_600_000_000, 1_600_000_000))
    for path in (service.blobs.root / "sha256").rglob("*"):
        if path.is_file():
            os.utime(path, (1_600_000_000, 1_600_000_000))

    # Never beside a verification (it would report as lost what gc deletes).
    paused, go = hold_verifier(service)
    assert api.post("/v1/store/verify", json={}).status_code == 202
    assert paused.wait(20)
    refused = api.post("/v1/store/gc", json={"grace_seconds": 0})
    assert refused.status_code == 409 and "verification is running" in refused.text
    service.verifier.rate = 0.0
    go.set()
    wait_for(lambda: api.get("/v1/store/verify").json()["state"] != "running",
             what="the verification to end")

    assert api.post("/v1/store/gc", json={"grace_seconds": -1}).status_code == 400
    # Nor a verification beside a gc, nor a second gc.
    marks, marking, go_on = service.collector.marks, threading.Event(), threading.Event()

    def held_marks():  # type: ignore[no-untyped-def]
        marking.set()
        go_on.wait(20)
        return marks()

    service.collector.marks = held_marks
    assert api.post("/v1/store/gc", json={"dry_run": True}).status_code == 202
    assert marking.wait(20)
    busy = api.post("/v1/store/verify", json={})
    assert busy.status_code == 409 and "gc is running" in busy.text
    second = api.post("/v1/store/gc", json={})
    assert second.status_code == 409 and "running already" in second.text
    go_on.set()
    wait_for(lambda: api.get("/v1/store/gc").json()["state"] != "running", what="the dry gc")
    dry = api.get("/v1/store/gc").json()
    # (looked for on disk: asking the store would refresh it, and gc keep it)
    assert dry["dry_run"] and dry["trees_deleted"] == 1
    assert (service.blobs.root / "trees" / unused[:2] / f"{unused[2:]}.json").exists()
    started = api.post("/v1/store/gc", json={"grace_seconds": 0})
    assert started.status_code == 202, started.text
    wait_for(lambda: api.get("/v1/store/gc").json()["state"] != "running", what="the gc")
    report = api.get("/v1/store/gc").json()
    assert report["state"] == "done" and report["trees_deleted"] == 1, report
    assert service.blobs.has_tree(used) and service.blobs.has_tree(noted)
    assert not service.blobs.has_tree(unused)
    assert not service.blobs.has(sha(b"nobody names this"))
    assert service.blobs.has(sha(b"named in a setting only"))


def test_a_version_resolved_for_a_job_keeps_its_tree_though_removed_before_gc(
        api: TestClient, service: UseCases) -> None:
    """A submit resolves a dataset version, then stores its job: if the version is
    removed and gc runs in between, the tree the job is about to name must stay."""
    tree = upload_tree(api, {"data.csv": b"a,b\n1,2\n"})
    assert api.post("/v1/datasets", json={"name": "d", "tree_id": tree}).status_code == 201
    path = service.blobs.root / "trees" / tree[:2] / f"{tree[2:]}.json"
    os.utime(path, (1_600_000_000, 1_600_000_000))
    caller = service.accounts.caller_for(service.accounts.owner)
    resolved = service.registry.resolve(caller, "dataset", "d")
    assert api.delete("/v1/datasets/d").status_code == 200
    service.collector.run(grace=3600, dry_run=False)
    assert path.exists() and resolved.tree_id == tree
