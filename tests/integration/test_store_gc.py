"""`nai-admin store gc` on the real daemon with real users: a removed dataset version's
blobs go and their disk space comes back; what kept versions, jobs (archived ones
too) and a client's upload in flight need stays; `store verify` is clean after."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from conftest import (  # type: ignore[import-not-found]
    Daemon,
    needs_root,
    post_as,
    upload_as,
    wait_for,
)

from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import pack, tree_upload

pytestmark = [needs_root]
MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_file(daemon: Daemon, digest: str) -> Path:
    return daemon.state / "blobs" / "sha256" / digest[:2] / digest[2:]


def store_usage(daemon: Daemon) -> int:
    """Bytes the blob store takes on disk (blocks, as `du` counts them)."""
    return sum(p.lstat().st_blocks * 512 for p in (daemon.state / "blobs").rglob("*"))


def backdate(path: Path, days: float = 2) -> None:
    then = time.time() - days * 86400
    os.utime(path, (then, then))


def archived(daemon: Daemon, job: int) -> bool:
    for path in (daemon.state / "archive").glob("jobs-*.json"):
        try:
            if str(job) in json.loads(path.read_text()).get("jobs", {}):
                return True
        except ValueError:  # being replaced
            continue
    return False


def gc(daemon: Daemon, *args: str) -> dict:
    done = daemon.admin("store", "gc", "--json", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["state"] == "done", report
    return dict(report)


def verify_is_clean(daemon: Daemon) -> None:
    checked = daemon.admin("store", "verify", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["clean"]


def test_gc_frees_a_removed_version_and_keeps_what_versions_and_jobs_use(
        daemon_factory: Callable[..., Daemon], make_user) -> None:
    daemon = daemon_factory(jobs={"archive_after_hours": 0})  # ended jobs archived at once
    daemon.start()
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    removed_only = os.urandom(4 * MiB)
    v1 = upload_as(daemon, alice, {"shared.txt": b"in both versions\n", "big.bin": removed_only})
    v2 = upload_as(daemon, alice, {"shared.txt": b"in both versions\n", "new.txt": b"v2\n"})
    assert daemon.as_user(alice, "POST", "/v1/datasets",
                          {"name": "corpus", "tree_id": v1}).status == 201
    assert daemon.as_user(alice, "POST", "/v1/datasets/corpus/versions",
                          {"tree_id": v2}).status == 201
    code = upload_as(daemon, alice, {"run.sh": b'echo result > "$NAI_OUTPUT_DIR/out.txt"\n'})
    job = daemon.as_user(alice, "POST", "/v1/jobs", {
        "spec": {"command": "sh run.sh", "gpus": 0, "dataset": "corpus@2"},
        "code_tree": code}).json()["id"]
    wait_for(lambda: daemon.as_user(alice, "GET", f"/v1/jobs/{job}").json()["state"]
             in TERMINAL_STATES, what=f"job {job}")
    # A restart's first tick archives it (later ones, every minute); the archived jobs'
    # trees come from what the new daemon read of its archives.
    daemon.stop()
    daemon.start()
    wait_for(lambda: archived(daemon, job), what=f"job {job} archived")
    output = daemon.as_user(alice, "GET", f"/v1/jobs/{job}").json()["output_tree"]
    assert output
    assert daemon.as_user(alice, "DELETE", "/v1/datasets/corpus/versions/1").status == 200

    refused = daemon.admin("store", "gc", user=alice)
    assert refused.returncode == 1 and "not an admin" in refused.stderr
    # Everything stored and promised long ago: what stays is what is named, not what
    # is young (a promise keeps a file up to an hour past a grace of 0).
    for kind in ("sha256", "trees"):
        for path in (daemon.state / "blobs" / kind).rglob("*"):
            if path.is_file():
                backdate(path)
    before = store_usage(daemon)
    report = gc(daemon, "--grace", "0")

    assert not blob_file(daemon, sha(removed_only)).exists()
    assert (report["trees_deleted"], report["blobs_deleted"]) == (1, 1)
    assert report["bytes_freed"] == 4 * MiB
    assert before - store_usage(daemon) >= 4 * MiB  # the disk space came back
    for data in (b"in both versions\n", b"v2\n", b"result\n",
                 b'echo result > "$NAI_OUTPUT_DIR/out.txt"\n'):
        assert blob_file(daemon, sha(data)).exists(), data
    for tree in (v2, code, output):
        assert daemon.as_user(alice, "HEAD", f"/v1/trees/{tree}").status == 200
    assert daemon.as_user(alice, "HEAD", f"/v1/trees/{v1}").status == 404
    verify_is_clean(daemon)
    again = gc(daemon, "--grace", "0")
    assert (again["trees_deleted"], again["blobs_deleted"]) == (0, 0)


def test_gc_keeps_uploads_in_flight_and_a_dry_run_deletes_nothing(
        daemon: Daemon, make_user) -> None:
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    told = b"the client was told the server has it\n"
    stale = b"uploaded long ago, never used\n"
    fresh = b"uploaded a moment ago, its tree not posted yet\n"
    post_as(daemon, alice, "/v1/blobs", pack({sha(d): d for d in (told, stale, fresh)}),
            "application/x-tar")
    backdate(blob_file(daemon, sha(told)))
    backdate(blob_file(daemon, sha(stale)))
    # The client's first step of a push: the server has it, so it is not sent again.
    asked = daemon.as_user(alice, "POST", "/v1/blobs/missing", {"digests": [sha(told)]})
    assert asked.json()["missing"] == []

    dry = gc(daemon, "--grace", "1h", "--dry-run")
    assert dry["dry_run"] and dry["blobs_deleted"] == 1 and dry["claims_deleted"] == 1
    assert blob_file(daemon, sha(stale)).exists()
    text = daemon.admin("store", "gc", "--grace", "1h", "--dry-run")
    assert text.returncode == 0 and "would delete 1" in text.stdout

    report = gc(daemon, "--grace", "1h")

    assert report["blobs_deleted"] == 1 and report["young_blobs_kept"] == 2
    assert not blob_file(daemon, sha(stale)).exists()
    assert blob_file(daemon, sha(told)).exists() and blob_file(daemon, sha(fresh)).exists()
    # The client's next step: the tree naming what it was told the server has.
    _, manifest = tree_upload({"told.txt": told, "fresh.txt": fresh})
    post_as(daemon, alice, "/v1/trees", json.dumps(manifest).encode(), "application/json")
    # What went is asked for again, so the client sends it.
    asked = daemon.as_user(alice, "POST", "/v1/blobs/missing", {"digests": [sha(stale)]})
    assert asked.json()["missing"] == [sha(stale)]
    verify_is_clean(daemon)


def test_gc_refuses_a_bad_grace_with_a_clear_error(daemon: Daemon) -> None:
    bad = daemon.admin("store", "gc", "--grace", "soon")
    assert bad.returncode == 1 and "--grace" in bad.stderr
    assert "e.g. 2h" in bad.stderr
