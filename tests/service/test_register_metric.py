"""`register_model` with `register_metric` in the spec: the version made at the job's
end keeps the chosen metric's best and last, in the direction given or guessed."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from nai_server.app.use_cases import UseCases
from nai_server.core.spec import SpecError, parse_spec
from nai_server.testing import tick_until

METRICS = ('printf \'{"step": 1, "val_ppl": 30, "bleu": 10}\\n{"step": 2, "val_ppl": 20, '
           '"bleu": 30}\\n{"step": 3, "val_ppl": 25, "bleu": 20}\\n\' >> "$NAI_METRICS_FILE"; '
           'echo w > "$NAI_OUTPUT_DIR/w"')


def _registered(api: TestClient, service: UseCases, metric: object) -> dict:
    made = api.post("/v1/jobs", json={"spec": {
        "command": METRICS, "gpus": 0, "register_model": "lm", "register_metric": metric}})
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    job = tick_until(service, lambda: (j := api.get(f"/v1/jobs/{job_id}").json())
                     ["state"] == "succeeded" and j, what="the job's end")
    name, version = job["registered"].split("@")
    return dict(api.get(f"/v1/models/{name}/versions/{version}").json()["metadata"])


def test_the_chosen_metric_is_kept_at_the_jobs_end(api: TestClient, service: UseCases) -> None:
    guessed = _registered(api, service, "val_ppl")["metric"]
    assert (guessed["name"], guessed["direction"], guessed["best"], guessed["best_step"],
            guessed["last"]) == ("val_ppl", "min", 20, 2, 25)
    given = _registered(api, service, {"name": "val_ppl", "direction": "max"})
    assert (given["metric"]["best"], given["summary"]["val_ppl"]["best"]) == (30, 30)
    assert given["summary"]["bleu"]["best"] == 30  # the others keep their guessed way
    listed = {e["name"]: e for e in api.get("/v1/models").json()}
    assert listed["lm"]["metric"]["best"] == 30


def test_a_bad_choice_is_refused_at_submit() -> None:
    assert parse_spec("command: x\nregister_metric: loss\n").register_metric == {
        "name": "loss", "direction": None}
    for bad in ("{name: loss, direction: up}", "{direction: min}", "[loss]",
                "{name: loss, way: min}"):
        with pytest.raises(SpecError, match="register_metric: must be a metric's name"):
            parse_spec(f"command: x\nregister_metric: {bad}\n")


# A job writes its own metrics.jsonl: a line nested past json.loads' recursion, one the
# API cannot send back, a NaN, and an integer the state file cannot store.
CRAFTED = ["[" * 5000, '{"deep": ' + "[" * 400 + "]" * 400 + "}",
           '{"step": 2, "loss": NaN}', '{"step": 3, "seen": 100000000000000000000000000000}']
WRITE_LINES = ('python3 -c "import os, sys; open(os.environ[\'NAI_METRICS_FILE\'], \'a\')'
               '.write(sys.argv[1])" "$LINES"; echo w > "$NAI_OUTPUT_DIR/w"')


def test_crafted_metrics_lines_are_skipped_and_registration_goes_through(
        api: TestClient, service: UseCases) -> None:
    lines = "".join(f"{line}\n" for line in ['{"step": 1, "loss": 4}', *CRAFTED])
    made = api.post("/v1/jobs", json={"spec": {
        "command": WRITE_LINES, "gpus": 0, "env": {"LINES": lines}, "register_model": "lm",
        "register_metric": "loss"}})
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    job = tick_until(service, lambda: (j := api.get(f"/v1/jobs/{job_id}").json())
                     ["state"] == "succeeded" and j, what="the job's end")
    assert job.get("registered") == "lm@1", job.get("message")
    page = api.get(f"/v1/jobs/{job_id}/metrics")
    assert page.status_code == 200, page.text
    assert page.json()["metrics"] == [{"step": 1, "loss": 4}, {"step": 2, "loss": None},
                                      {"step": 3, "seen": 10**29}]
    assert page.json()["skipped"] == 2
    again = api.post("/v1/models/lm2/from-job", json={"job": job_id, "metric": "loss"})
    assert again.status_code == 201, again.text
    for ref in ("lm/versions/1", "lm2/versions/1"):
        metadata = api.get(f"/v1/models/{ref}").json()["metadata"]
        assert metadata["metrics"] == {"step": 2, "loss": None}  # the last it can keep
        assert metadata["metric"]["best"] == 4 and metadata["metric"]["count"] == 1
