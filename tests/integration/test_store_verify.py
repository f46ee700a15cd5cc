"""Blobs lost or rotted on the real daemon's disk (issue 14, item 5): the real client
sends a lost blob again and the job runs, and `nai-admin store verify --repair`
names the damage and what it breaks, moves the rotten blob aside, and the owner's
next upload makes the store clean again."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from conftest import (  # type: ignore[import-not-found]
    Daemon,
    needs_root,
    post_as,
    upload_as,
    wait_for,
)

from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import pack
from nai_tui.remote.client import ServerClient
from nai_tui.sync.hashcache import HashCache
from nai_tui.sync.push import push, silent_progress

pytestmark = [needs_root]
TERMINAL = TERMINAL_STATES


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_file(daemon: Daemon, digest: str) -> Path:
    return daemon.state / "blobs" / "sha256" / digest[:2] / digest[2:]


def test_a_lost_blob_is_sent_again_by_the_client_and_the_job_runs(
        daemon: Daemon, tmp_path: Path) -> None:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "data.txt").write_bytes(b"the data\n")
    (folder / "run.sh").write_text('cp data.txt "$NAI_OUTPUT_DIR/"\n')
    for path in folder.iterdir():  # settled long ago, so the hash cache trusts them
        os.utime(path, (1_600_000_000, 1_600_000_000))
    command = {"command": "sh run.sh", "gpus": 0}
    with HashCache(tmp_path / "hashes.sqlite") as cache, ServerClient(daemon.client()) as client:
        tree = push(client, folder, cache=cache, progress=silent_progress)

        def run_job() -> str:
            job = client.submit(spec=command, code_tree=tree).id
            wait_for(lambda: client.job(job).state in TERMINAL, what=f"job {job}")
            return client.job(job).state

        assert run_job() == "succeeded"
        blob_file(daemon, sha(b"the data\n")).unlink()  # a disk fault, an admin's mistake
        # The hash cache is warm: only the server can say that the blob must travel.
        assert push(client, folder, cache=cache, progress=silent_progress) == tree
        assert blob_file(daemon, sha(b"the data\n")).read_bytes() == b"the data\n"
        assert run_job() == "succeeded"


def test_nai_admin_store_verify_repair(daemon: Daemon, make_user) -> None:
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    files = {"keep.txt": b"kept\n", "lost.txt": b"lost\n", "rotten.bin": b"rotten\n"}
    tree = upload_as(daemon, alice, files)
    assert daemon.as_user(alice, "POST", "/v1/datasets",
                          {"name": "corpus", "tree_id": tree}).status == 201
    job = daemon.as_user(alice, "POST", "/v1/jobs", {"spec": {"command": "true", "gpus": 0},
                                                     "code_tree": tree}).json()["id"]
    wait_for(lambda: daemon.as_user(alice, "GET", f"/v1/jobs/{job}").json()["state"]
             in TERMINAL, what=f"job {job}")

    blob_file(daemon, sha(b"lost\n")).unlink()
    rotten = blob_file(daemon, sha(b"rotten\n"))
    os.chmod(rotten, 0o644)
    rotten.write_bytes(b"rotted\n")

    refused = daemon.admin("store", "verify", "--repair", "--json", user=alice)
    assert refused.returncode == 1 and "not an admin" in refused.stderr

    found = daemon.admin("store", "verify", "--repair", "--json")
    assert found.returncode == 1, found.stderr  # damage found
    report = json.loads(found.stdout)
    assert report["state"] == "done" and report["repair"] and not report["clean"]
    by_digest = {b["digest"]: b for b in report["blobs"]}
    assert by_digest[sha(b"lost\n")]["problem"] == "missing"
    corrupt = by_digest[sha(b"rotten\n")]
    assert corrupt["problem"] == "corrupt" and corrupt["owners"] == [alice.name]
    # Moved aside, never deleted.
    assert (daemon.state / "blobs" / corrupt["moved_to"]).read_bytes() == b"rotted\n"
    assert not rotten.exists()
    assert [(t["id"], t["files"]) for t in report["trees"]] == [
        (tree, ["lost.txt", "rotten.bin"])]
    assert [(j["id"], j["user"]) for j in report["jobs"]] == [(job, alice.name)]
    assert [(v["kind"], v["name"], v["version"]) for v in report["versions"]] == [
        ("dataset", "corpus", 1)]

    # The store now asks for both; alice sends them again, and all is whole.
    digests = [sha(d) for d in files.values()]
    missing = daemon.as_user(alice, "POST", "/v1/blobs/missing", {"digests": digests})
    assert missing.json()["missing"] == [sha(b"lost\n"), sha(b"rotten\n")]
    assert daemon.as_user(alice, "HEAD", f"/v1/trees/{tree}").status == 404
    pulled = daemon.as_user(alice, "POST", f"/v1/trees/{tree}/archive",
                            {"paths": ["lost.txt"]})
    assert pulled.status == 409 and "'lost.txt'" in pulled.json()["error"]["message"]
    post_as(daemon, alice, "/v1/blobs", pack({sha(b"lost\n"): b"lost\n",
                                              sha(b"rotten\n"): b"rotten\n"}),
            "application/x-tar")
    assert daemon.as_user(alice, "HEAD", f"/v1/trees/{tree}").status == 200
    clean = daemon.admin("store", "verify", "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["clean"]
    text = daemon.admin("store", "verify", "--status")
    assert text.returncode == 0 and "the store is clean" in text.stdout
