"""Dataset processors (`nai dataset process`) through the real daemon, as a real non-root
unix user: the processor runs as that user's job over the read-only input version,
its output becomes the next version with lineage, and one that raises fails the job
with its error, making no version."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]
from test_registry_access import Actor, upload_tree  # type: ignore[import-not-found]

from nai_server.protocol import TERMINAL_STATES
from nai_server.testing.plugin_dist import write_dist

pytestmark = [needs_root]

PROCS = '''
import os
from nai_server.plugins.contracts import hookimpl

with open(os.path.join(os.path.dirname(__file__), "imported-by"), "a") as seen:
    seen.write(f"{os.getuid()}\\n")  # who imports this module: never the daemon

class Who:
    @hookimpl
    def nai_process_dataset(self, source, target, options):
        try:
            (source / "new.txt").write_text("x")
            wrote = "wrote"
        except OSError:
            wrote = "refused"
        (target / "who").write_text(f"{os.getuid()} {wrote} {options['note']}")
        return {"ok": True}

class Boom:
    @hookimpl
    def nai_process_dataset(self, source, target, options):
        raise ValueError("no label column in " + ",".join(sorted(os.listdir(source))))

who, boom = Who(), Boom()
'''
DATA = {f"img/{i}.txt": f"{i}\n".encode() for i in range(10)} | {"rows.csv": b"a\n1\n"}


def test_a_processor_makes_a_new_version_as_the_user(
        daemon_factory, make_user, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Where the users' jobs can read it too (pytest's tmp_path is root's alone).
    site = write_dist(Path(tempfile.mkdtemp(prefix="nai-site-")), "nai-test-procs", "2.5.0",
                      {"t_procs": PROCS}, {
        "nai.dataset_processors": {"split": "nai_plugins.split", "who": "t_procs:who",
                                   "boom": "t_procs:boom", "off": "t_procs:who"}})
    request.addfinalizer(lambda: shutil.rmtree(site, ignore_errors=True))
    (site / "imported-by").touch(0o666)
    (site / "imported-by").chmod(0o666)
    monkeypatch.setenv("PYTHONPATH", f"{site}:{os.environ.get('PYTHONPATH', '')}")
    daemon: Daemon = daemon_factory(plugins={
        "split": {}, "boom": {}, "who": {"options": {"note": "from-admin"}}})
    daemon.start()
    alice, bob = make_user(), make_user()
    for user in (alice, bob):
        assert daemon.admin("user", "add", user.name).returncode == 0
    sender = Actor(daemon, alice)
    tree = upload_tree(daemon, DATA, sender)
    sender.http.close()
    made = daemon.as_user(alice, "POST", "/v1/datasets", {"name": "photos", "tree_id": tree})
    assert made.status == 201, made.body

    def process(user, plugin: str, **body):
        return daemon.as_user(user, "POST", "/v1/datasets/photos/process",
                              {"plugin": plugin, **body})

    def ended(job_id: int) -> dict:
        def done() -> dict | None:
            info = daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}").json()
            return info if info["state"] in TERMINAL_STATES else None
        return wait_for(done, timeout=60, what=f"job {job_id} to end")

    listing = {p["name"]: p for p in daemon.as_user(alice, "GET", "/v1/plugins").json()}
    assert listing["split"]["kind"] == "dataset_processor"
    assert listing["split"]["state"] == "ok" and listing["off"]["state"] == "disabled"
    assert process(alice, "off").status == 404
    assert process(bob, "split").status == 404  # alice's dataset is private

    job = process(alice, "split", options={"seed": "7", "ratios": "0.6,0.2,0.2"})
    assert job.status == 201, job.body
    info = ended(job.json()["id"])
    log = daemon.as_user(alice, "GET", f"/v1/jobs/{info['id']}/logs").body.decode()
    assert info["state"] == "succeeded", log
    assert info["spec"]["gpus"] == 0 and info["registered"] == "photos@2"
    entry = daemon.as_user(alice, "GET", "/v1/datasets/photos").json()
    v1, v2 = entry["versions"]
    assert v1["tree_id"] == tree  # the input is untouched
    assert v2["tree_id"] == info["output_tree"] and v2["files"] == len(DATA)
    lineage = v2["metadata"]["lineage"]
    assert lineage["datasets"] == ["photos@1"] and lineage["job"] == info["id"]
    assert lineage["processor"] == {"plugin": "split", "version": "2.5.0",
                                    "options": {"seed": "7", "ratios": "0.6,0.2,0.2"}}
    assert '"train": 7' in log  # 11 files: 60/20/20, the rest to the first part

    # The processor ran as alice, could not write its input, and got the admin's options.
    job = process(alice, "who", version="1", to="who-ran", options={})
    info = ended(job.json()["id"])
    assert info["state"] == "succeeded", info
    who = daemon.as_user(alice, "GET", f"/v1/jobs/{info['id']}/outputs/file?path=who")
    assert who.body.decode() == f"{alice.uid} refused from-admin"
    made = daemon.as_user(alice, "GET", "/v1/datasets/who-ran").json()
    assert made["owner"] == {"user": alice.name}
    assert made["versions"][0]["metadata"]["lineage"]["datasets"] == ["photos@1"]

    # A processor that raises fails the job with its error, and makes no version.
    job = process(alice, "boom", version="1")
    info = ended(job.json()["id"])
    log = daemon.as_user(alice, "GET", f"/v1/jobs/{info['id']}/logs").body.decode()
    assert info["state"] == "failed" and info["exit_code"] == 1, info
    assert log.rstrip().endswith(
        "dataset processor failed: ValueError: no label column in img,rows.csv"), log
    assert len(daemon.as_user(alice, "GET", "/v1/datasets/photos").json()["versions"]) == 2
    # Only alice's jobs imported the processors; the root daemon never did.
    assert set((site / "imported-by").read_text().split()) == {str(alice.uid)}
