"""Dataset processors (`nai dataset process`) through the real daemon, as a real non-root
unix user: the processor runs as that user's job over the read-only input version,
its output becomes the next version with lineage, and one that raises fails the job
with its error, making no version; so does an option the processor does not take (a
typo given with `-o` through `nai dataset process --follow`, or a key of the admin's
config), told before the processor reads a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]
from plug_support import nai_as  # type: ignore[import-not-found]
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
        "nai.dataset_processors": {"split2": "nai_plugins.split", "split3": "nai_plugins.split",
                                   "who": "t_procs:who",
                                   "boom": "t_procs:boom", "off": "t_procs:who"}})
    request.addfinalizer(lambda: shutil.rmtree(site, ignore_errors=True))
    (site / "imported-by").touch(0o666)
    (site / "imported-by").chmod(0o666)
    monkeypatch.setenv("PYTHONPATH", f"{site}:{os.environ.get('PYTHONPATH', '')}")
    daemon: Daemon = daemon_factory(plugins={
        "split2": {}, "boom": {}, "who": {"options": {"note": "from-admin"}},
        "split3": {"options": {"seeds": "4"}}})  # the admin's typo
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
    assert listing["split2"]["kind"] == "dataset_processor"
    assert listing["split2"]["state"] == "ok" and listing["off"]["state"] == "disabled"
    assert process(alice, "off").status == 404
    assert process(bob, "split2").status == 404  # alice's dataset is private

    job = process(alice, "split2", options={"seed": "7", "ratios": "0.6,0.2,0.2"})
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
    assert lineage["processor"] == {"plugin": "split2", "version": "2.5.0",
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

    # A typo in an option, through `nai` as alice, following the job: it fails before
    # split reads a file, the log's last line says which key, whence, what was meant
    # and what split takes (listed with help above it); `nai` exits with its status.
    done = nai_as(alice, "dataset", "process", "photos@1", "--with", "split2", "-o",
                  "ratio=0.5", "-o", "seed=1", "--follow", socket=daemon.socket)
    assert done.returncode == 1, (done.stdout, done.stderr)
    said = done.stderr.rstrip().splitlines()
    assert said[-1].startswith("job ") and said[-1].endswith("failed (exit code 1)"), said
    assert said[-2].startswith("nai: dataset processor failed: split2 has no option "
                               "'ratio' (given with -o; did you mean 'ratios'?); it takes "
                               "ratios, names, seed, by, stratify"), said
    assert any("ratios" in line and "(default 0.8,0.1,0.1)" in line for line in said), said
    assert "nai: processing" not in done.stdout + done.stderr  # split never ran
    assert len(daemon.as_user(alice, "GET", "/v1/datasets/photos").json()["versions"]) == 2
    # A bad key of the admin's (plugins.split3.options) is said to be the admin's.
    job = process(alice, "split3", version="1", to="never")
    info = ended(job.json()["id"])
    log = daemon.as_user(alice, "GET", f"/v1/jobs/{info['id']}/logs").body.decode()
    assert info["state"] == "failed" and info["exit_code"] == 1, info
    last = log.rstrip().splitlines()[-1]
    assert "'seeds' (from the server config, plugins.split3.options; did you mean " \
           "'seed'?)" in last and "ask an admin" in last, log
    assert daemon.as_user(alice, "GET", "/v1/datasets/never").status == 404
    # Only alice's jobs imported the processors; the root daemon never did.
    assert set((site / "imported-by").read_text().split()) == {str(alice.uid)}
