"""A dataset processor's outputs are stored while it runs (host/collection `ahead`), so
its end's collection finds them in the store and makes no temp file for each; what
changes after a pass is collected as it ends, a large file only at the end, and no
other job's drafts are stored ahead."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app.use_cases import UseCases
from nai_server.config import PluginConfig
from nai_server.host import outputs
from nai_server.plugins import PluginRegistry
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import AsPeer, make_service, tick_until, upload_tree, wait_for
from nai_server.testing.plugin_dist import write_dist

# Writes its outputs, then waits for the test's word in `gate` before it rewrites one.
GATED = '''
import os, time
from pathlib import Path
from nai_server.plugins.contracts import hookimpl

class Gated:
    @hookimpl
    def nai_process_dataset(self, source, target, options):
        (target / "kept.txt").write_text("written once")
        (target / "changed.txt").write_text("draft")
        (target / "big.bin").write_bytes(b"b" * (int(options["big"])))
        gate = Path(options["gate"])
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        (target / "changed.txt").write_text("final")
        return {}

gated = Gated()


class Stepped:
    @hookimpl
    def nai_process_dataset(self, source, target, options):
        (target / "first.txt").write_text("first")
        deadline = time.monotonic() + 60
        while not Path(options["gate"]).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        (target / "second.txt").write_text("second")
        while not Path(options["gate"] + ".end").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return {}

stepped = Stepped()
'''
BIG = outputs.SMALL_FILE + 1


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[tuple[UseCases, TestClient]]:
    site = write_dist(tmp_path / "site", "nai-test-gated", "1.0", {"t_gated": GATED},
                      {"nai.dataset_processors": {"gated": "t_gated:gated",
                                                  "stepped": "t_gated:stepped"}})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), *sys.path]))  # the job's
    service = make_service(tmp_path / "state", gpus=1, plugins=PluginRegistry.discover(
        {"gated": PluginConfig(), "stepped": PluginConfig()}))
    try:
        with TestClient(AsPeer(create_app(service)), base_url="http://nai") as api:
            tree = upload_tree(api, {"in.txt": b"input"})
            made = api.post("/v1/datasets", json={"name": "src", "tree_id": tree})
            assert made.status_code == 201
            yield service, api
    finally:
        for gate in ("gate", "gate.end"):  # a job left waiting (a failed test) ends too
            (tmp_path / gate).touch()
        service.close()


def test_a_processors_outputs_are_stored_as_it_runs_and_its_end_has_the_last_bytes(
        served: tuple[UseCases, TestClient], tmp_path: Path) -> None:
    service, api = served
    gate = tmp_path / "gate"
    made = api.post("/v1/datasets/src/process", json={
        "plugin": "gated", "options": {"gate": str(gate), "big": str(BIG)}, "to": "out"})
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    blobs = service.blobs

    # Stored while the job runs (it waits on the gate): the small files, not the big one.
    tick_until(service, lambda: blobs.has(sha(b"written once")) and blobs.has(sha(b"draft")),
               timeout=60, what="the outputs stored ahead")
    assert api.get(f"/v1/jobs/{job_id}").json()["state"] == "running"
    assert not blobs.has(sha(b"b" * BIG))

    gate.touch()
    info = tick_until(service, lambda: (i := api.get(f"/v1/jobs/{job_id}").json())["state"]
                      in TERMINAL_STATES and i, timeout=60, what="the job's end")
    assert info["state"] == "succeeded", api.get(f"/v1/jobs/{job_id}/logs").text
    tree = api.get("/v1/datasets/out").json()["versions"][-1]["tree_id"]
    assert {e.path: e.sha256 for e in blobs.get_tree(tree)} == {
        "kept.txt": sha(b"written once"), "changed.txt": sha(b"final"),
        "big.bin": sha(b"b" * BIG)}


def test_passes_go_on_between_the_daemons_ticks(
        served: tuple[UseCases, TestClient], tmp_path: Path) -> None:
    service, api = served
    gate = tmp_path / "gate"
    made = api.post("/v1/datasets/src/process", json={
        "plugin": "stepped", "options": {"gate": str(gate)}, "to": "out"})
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    tick_until(service, lambda: service.blobs.has(sha(b"first")), timeout=60,
               what="the first file stored ahead")
    gate.touch()  # from here on, no tick until the second file is stored
    wait_for(lambda: service.blobs.has(sha(b"second")), timeout=60,
             what="the second file stored ahead, with no tick")
    assert api.get(f"/v1/jobs/{job_id}").json()["state"] == "running"
    (tmp_path / "gate.end").touch()
    info = tick_until(service, lambda: (i := api.get(f"/v1/jobs/{job_id}").json())["state"]
                      in TERMINAL_STATES and i, timeout=60, what="the job's end")
    assert info["state"] == "succeeded", api.get(f"/v1/jobs/{job_id}/logs").text


def test_other_jobs_outputs_are_collected_only_at_their_end(
        served: tuple[UseCases, TestClient], tmp_path: Path) -> None:
    service, api = served
    gate = tmp_path / "gate"
    job = api.post("/v1/jobs", json={"spec": {
        "command": f'echo a-draft > "$NAI_OUTPUT_DIR/d.txt"; '
                   f'while [ ! -e {gate} ]; do sleep 0.02; done', "gpus": 0, "time_limit": "5m"}})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    draft = service.runtime.job_dir(job_id) / "output" / "d.txt"
    tick_until(service, draft.exists, timeout=60, what="the draft")
    service.tick()  # where passes would start
    assert job_id not in service.runtime.collections._ahead
    assert not service.blobs.has(sha(b"a-draft\n"))
    gate.touch()
    tick_until(service, lambda: api.get(f"/v1/jobs/{job_id}").json()["state"]
               in TERMINAL_STATES, timeout=60, what="the job's end")
    assert service.blobs.has(sha(b"a-draft\n"))
