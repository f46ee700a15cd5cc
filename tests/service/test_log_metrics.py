"""Metrics from a job's log, with no change to its code (`metrics:` in nai.yaml): the
daemon reads the log as it grows and appends the points to metrics.jsonl, where
`nai metrics`, the TUI's plots and `register_model` find them."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.testclient import TestClient

from nai_server.app.use_cases import UseCases
from nai_server.host.metrics_ingest import STATE_FILE
from nai_server.testing import tick_until

END = {"succeeded", "failed", "cancelled", "timed_out", "lost"}
# A print-only training script, as a researcher has it (no nai import, no file written).
PRINTS = ("python3 -c \"\n"
          "for epoch in range(1, 4):\n"
          "    print(f'| epoch {epoch:3d} | lr 0.5 | loss {2.0 / epoch:5.2f} | ppl 9.1')\n"
          "print('| end of training | test loss  0.61')\n\"")
PATTERN = r"\| epoch +(?P<epoch>\d+) .* loss +(?P<loss>[\d.]+)"


def submit(api: TestClient, spec: dict) -> int:
    made = api.post("/v1/jobs", json={"spec": {"gpus": 0, **spec}})
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def ended(api: TestClient, service: UseCases, job_id: int) -> dict:
    tick_until(service, lambda: api.get(f"/v1/jobs/{job_id}").json()["state"] in END,
               what=f"job {job_id} to end")
    return dict(api.get(f"/v1/jobs/{job_id}").json())


def rows(api: TestClient, job_id: int) -> list[dict]:
    return list(api.get(f"/v1/jobs/{job_id}/metrics").json()["metrics"])


def test_print_only_script_gets_metrics_and_a_registered_summary(
        api: TestClient, service: UseCases) -> None:
    job_id = submit(api, {"command": PRINTS, "register_model": "lm",
                          "metrics": [{"pattern": PATTERN, "step": "epoch"}]})
    job = ended(api, service, job_id)
    assert job["state"] == "succeeded", job
    got = rows(api, job_id)
    assert [(r["step"], r["epoch"], r["loss"]) for r in got] == [
        (1, 1, 2.0), (2, 2, 1.0), (3, 3, 0.67)]
    assert all(isinstance(r["time"], float) for r in got)
    # The model version made from the job's outputs keeps its last point.
    version = api.get("/v1/models/lm").json()["versions"][0]
    assert version["metadata"]["metrics"]["loss"] == 0.67


def test_log_read_as_it_grows_without_repeating_points(api: TestClient, service: UseCases,
                                                       tmp_path: Path) -> None:
    gate = tmp_path / "go"
    script = (f"echo 'step=1 loss=0.9'; echo 'noise'; printf 'step=2 loss=0.5\\r'; "
              f"while [ ! -e {gate} ]; do sleep 0.02; done; echo 'step=3 loss=0.25'; "
              f"printf 'step=4 loss=0.125'")  # the last line has no newline
    job_id = submit(api, {"command": script, "metrics": r"step=(?P<step>\d+) loss=(?P<loss>\S+)"})
    tick_until(service, lambda: len(rows(api, job_id)) == 2, what="the first two points")
    for _ in range(3):  # more ticks read nothing new
        service.tick()
    assert [r["loss"] for r in rows(api, job_id)] == [0.9, 0.5]
    # A restarted daemon goes on from the saved offset.
    service.runtime.metrics = type(service.runtime.metrics)(service.runtime.jobs_dir)
    gate.touch()
    assert ended(api, service, job_id)["state"] == "succeeded"
    assert [(r["step"], r["loss"]) for r in rows(api, job_id)] == [
        (1, 0.9), (2, 0.5), (3, 0.25), (4, 0.125)]
    state = json.loads((service.runtime.job_dir(job_id) / STATE_FILE).read_text())
    assert state["offset"] == (service.runtime.job_dir(job_id) / "log").stat().st_size


def test_own_metrics_file_and_patterns_share_metrics_jsonl(api: TestClient,
                                                           service: UseCases) -> None:
    script = ("printf '{\"step\": 7, \"acc\": 0.5}' >> \"$NAI_METRICS_FILE\"; "
              "echo 'loss=0.3'")
    job_id = submit(api, {"command": script, "metrics": r"loss=(?P<loss>[\d.]+)"})
    assert ended(api, service, job_id)["state"] == "succeeded"
    # The job's unfinished line is kept whole; the daemon's point starts a new line.
    assert [(r["step"], r.get("acc"), r.get("loss")) for r in rows(api, job_id)] == [
        (7, 0.5, None), (1, None, 0.3)]


def test_bad_patterns_are_refused_at_submit(api: TestClient) -> None:
    for metrics, words in [("loss=([\\d.]+)", "no named group"),
                           ("(?P<loss>[", "not a valid regular expression"),
                           ("(?P<x>(a+)+)", "nests repetitions"),
                           ("(?P<x>.*) (?P<y>.*) (?P<z>.*)", "wide classes"),
                           ({"preset": "kears"}, "unknown preset"),
                           ({"tensorboard": "../x"}, "without '..'")]:
        made = api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 0,
                                                   "metrics": metrics}})
        assert made.status_code == 400, (metrics, made.text)
        assert words in made.text and "metrics" in made.text, made.text


def test_one_line_helper_reports_from_a_job(api: TestClient, service: UseCases) -> None:
    root = str(Path(__file__).resolve().parents[2])  # where nai_metrics is, for the job
    script = ("python3 -c \"from nai_metrics import log\n"
              "for s in (1, 2): log(step=s, loss=1.0 / s)\"")
    job_id = submit(api, {"command": script, "env": {"PYTHONPATH": root}})
    assert ended(api, service, job_id)["state"] == "succeeded"
    assert [(r["step"], r["loss"]) for r in rows(api, job_id)] == [(1, 1.0), (2, 0.5)]
