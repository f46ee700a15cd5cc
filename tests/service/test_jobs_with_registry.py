"""Jobs that use the registries, in process with real job processes: a dataset and a
base model pinned at submit and seen read-only at $NAI_DATASET_DIR / $NAI_MODEL_DIR
(links to the blobs, nothing copied), `register_model` turning a successful job's
outputs into a model version with its lineage, read access checked at submit, and
fine-tuning a model's own code end to end."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.app.accounts import Caller
from nai_server.app.use_cases import UseCases
from nai_server.core.spec import spec_from_dict
from nai_server.protocol import NotFound
from nai_server.testing import tick_until, upload_tree

FINETUNE = Path(__file__).resolve().parents[2] / "jobs" / "finetune-numpy"
END = {"succeeded", "failed", "cancelled", "timed_out", "lost"}


def create(api: TestClient, kind: str, name: str, files: dict[str, bytes], **extra) -> str:
    tree = upload_tree(api, files)
    made = api.post(f"/v1/{kind}s", json={"name": name, "tree_id": tree, **extra})
    assert made.status_code == 201, made.text
    return tree


def run_job(api: TestClient, service: UseCases, spec: dict, **body) -> dict:
    made = api.post("/v1/jobs", json={"spec": {"gpus": 0, **spec}, **body})
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    tick_until(service, lambda: api.get(f"/v1/jobs/{job_id}").json()["state"] in END,
               what=f"job {job_id} to end")
    return dict(api.get(f"/v1/jobs/{job_id}").json())


def output(api: TestClient, job: dict, path: str) -> str:
    got = api.get(f"/v1/jobs/{job['id']}/outputs/file", params={"path": path})
    assert got.status_code == 200, got.text
    return got.text


DATA = {"train/a.bin": os.urandom(70_000), "train/b.bin": os.urandom(1000),
        "labels.csv": b"id,label\n1,3\n"}


def test_job_reads_its_pinned_dataset_and_model_read_only(api: TestClient,
                                                          service: UseCases) -> None:
    tree = create(api, "dataset", "points", DATA, tag="best")
    api.post("/v1/datasets/points/versions", json={"tree_id": upload_tree(api, {"v2": b"2"})})
    create(api, "model", "base", {"weights.bin": b"w" * 5000})
    job = run_job(api, service, {
        "command": 'cd "$NAI_DATASET_DIR" && sha256sum labels.csv train/a.bin train/b.bin '
                   '> "$NAI_OUTPUT_DIR/sums" && cat "$NAI_MODEL_DIR/weights.bin" | wc -c '
                   '> "$NAI_OUTPUT_DIR/model_size"',
        "dataset": "points@best", "model": "base"})
    assert job["state"] == "succeeded", job
    # Pinned at submit to the exact versions, and shown on the job.
    assert job["dataset"] == {"name": "points", "version": 1, "tree_id": tree}
    assert (job["model"]["name"], job["model"]["version"]) == ("base", 1)
    assert api.get("/v1/datasets/points/versions/1").json()["used_by"] == [job["id"]]
    sums = dict(reversed(line.split()) for line in output(api, job, "sums").splitlines())
    assert sums == {p: hashlib.sha256(d).hexdigest() for p, d in DATA.items()}
    assert output(api, job, "model_size").strip() == "5000"

    # Links to the read-only blobs (nothing copied) in read-only directories.
    mount = service.runtime.job_dir(job["id"]) / "dataset"
    for path, data in DATA.items():
        st = (mount / path).stat()
        blob = service.blobs.path_of(hashlib.sha256(data).hexdigest()).stat()
        assert (st.st_ino, stat.S_IMODE(st.st_mode)) == (blob.st_ino, 0o444)
    for d in (mount, mount / "train"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o555


def test_register_model_makes_a_version_with_lineage(api: TestClient,
                                                     service: UseCases) -> None:
    create(api, "dataset", "points", DATA)
    create(api, "model", "base", {"weights.bin": b"w" * 100})
    script = ('printf \'{"step": 1, "loss": 0.5}\\n{"step": 2, "loss": 0.25}\\n\' '
              '>> "$NAI_METRICS_FILE"; echo new > "$NAI_OUTPUT_DIR/weights.bin"')
    job = run_job(api, service, {"command": script, "dataset": "points", "model": "base@1",
                                 "register_model": "tuned", "name": "tune"})
    assert job["state"] == "succeeded" and job["registered"] == "tuned@1", job
    entry = api.get("/v1/models/tuned").json()
    assert entry["owner"] == {"user": job["user"]}
    v = entry["versions"][0]
    assert v["tree_id"] == job["output_tree"] and v["description"].startswith(
        f"outputs of job {job['id']}")
    assert v["metadata"] == {"metrics": {"step": 2, "loss": 0.25}, "lineage": {
        "job": job["id"], "code_tree": None, "datasets": ["points@1"], "models": ["base@1"]},
        "summary": {"loss": {"best": 0.25, "best_step": 2, "last": 0.25, "last_step": 2,
                             "count": 2, "direction": "min"}}}

    # A second success is the next version; a failed job registers nothing.
    again = run_job(api, service, {"command": script, "register_model": "tuned"})
    assert again["registered"] == "tuned@2"
    failed = run_job(api, service, {"command": "echo x > $NAI_OUTPUT_DIR/w; exit 1",
                                    "register_model": "tuned"})
    assert failed["state"] == "failed" and failed["registered"] is None
    assert api.get("/v1/models/tuned").json()["latest"] == 2


def test_a_refused_registration_keeps_the_jobs_end(api: TestClient, service: UseCases,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise NotFound("no room at the inn")

    monkeypatch.setattr(service.registry, "register_output", refuse)
    job = run_job(api, service, {"command": "echo 1 > $NAI_OUTPUT_DIR/w",
                                 "register_model": "m"})
    assert job["state"] == "succeeded" and job["output_tree"]
    assert job["message"] == "not registered as model m: no room at the inn"


def test_unreadable_dataset_is_404_at_submit(api: TestClient, service: UseCases) -> None:
    create(api, "dataset", "secret", DATA)
    bob = Caller("bob", 4242, False, ())
    spec = spec_from_dict({"command": "true", "gpus": 0, "dataset": "secret"})
    with pytest.raises(NotFound) as refused:
        service.jobs.submit(bob, spec, None)
    with pytest.raises(NotFound) as absent:
        service.jobs.submit(bob, spec_from_dict({"command": "true", "gpus": 0,
                                                 "dataset": "nothing"}), None)
    assert refused.value.message == absent.value.message.replace("nothing", "secret")
    assert api.get("/v1/jobs").json()["total"] == 0  # nothing was queued
    missing = api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 0,
                                                  "model": "base@7"}})
    assert missing.status_code == 404


def test_removed_version_goes_when_its_last_job_ends(api: TestClient,
                                                     service: UseCases) -> None:
    create(api, "dataset", "d", DATA)
    made = api.post("/v1/jobs", json={"spec": {"command": "sleep 0.3", "gpus": 0,
                                               "dataset": "d"}})
    job_id = made.json()["id"]
    assert api.delete("/v1/datasets/d").json()["kept"] == {
        "1": [f"job {job_id} uses it and has not finished"]}
    tick_until(service, lambda: api.get(f"/v1/jobs/{job_id}").json()["state"] in END,
               what="the job to end")
    assert api.get(f"/v1/jobs/{job_id}").json()["state"] == "succeeded"
    assert api.get("/v1/datasets/d").status_code == 404


def test_finetune_a_model_on_a_dataset(api: TestClient, service: UseCases,
                                       tmp_path: Path) -> None:
    """The example in jobs/finetune-numpy: the model's own train.py, its weights as
    the base, the dataset read-only; the result is a new version with its lineage."""
    subprocess.run([sys.executable, str(FINETUNE / "make_data.py"), str(tmp_path / "data")],
                   check=True, capture_output=True)
    import numpy as np

    np.savez(tmp_path / "weights.npz", w=np.array([1.0, -1.0, 0.0, 2.0]))
    code = (FINETUNE / "model" / "train.py").read_bytes()
    create(api, "model", "linreg", {"train.py": code,
                                    "weights.npz": (tmp_path / "weights.npz").read_bytes()},
           metadata={"finetune_command": "python train.py"})
    create(api, "dataset", "points", {"data.npz": (tmp_path / "data" / "data.npz").read_bytes()})
    job = run_job(api, service, {"command": f"{sys.executable} train.py --epochs 20",
                                 "model": "linreg", "dataset": "points",
                                 "register_model": "linreg"}, code_from_model=True)
    log = api.get(f"/v1/jobs/{job['id']}/logs").text
    assert job["state"] == "succeeded", log
    base = api.get("/v1/models/linreg/versions/1").json()
    assert job["code_tree"] == base["tree_id"] and "starting from" in log
    v2 = api.get("/v1/models/linreg/versions/2").json()
    assert v2["metadata"]["lineage"] == {"job": job["id"], "code_tree": base["tree_id"],
                                         "datasets": ["points@1"], "models": ["linreg@1"]}
    assert v2["metadata"]["metrics"]["step"] == 20
    files = {e["path"] for e in api.get(f"/v1/trees/{v2['tree_id']}").json()["entries"]}
    assert files == {"train.py", "weights.npz"}  # a model one can fine-tune again

    # code_from_model needs a model, and the caller's read access to it.
    bad = api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 0},
                                     "code_from_model": True})
    assert bad.status_code == 400 and "code_from_model" in bad.text
    with pytest.raises(NotFound):
        service.jobs.submit(Caller("bob", 4242, False, ()), spec_from_dict(
            {"command": "true", "gpus": 0, "model": "linreg"}), None, code_from_model=True)
