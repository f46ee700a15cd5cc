"""An annotate session (`nai dataset annotate`, a service the annotate request alone
marks as one) keeps its labels when it is stopped or fails. A job whose own spec sets
the ANNOTATOR variable is an ordinary job: its partial outputs are not registered when
it is stopped, and no lineage names an annotator or a processor for it."""

from __future__ import annotations

from typing import Any

from conftest import Daemon  # type: ignore[import-not-found]

from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import wait_for


def test_a_user_set_annotator_variable_keeps_nothing_of_a_cancelled_job(
        daemon: Daemon, make_user: Any) -> None:
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    made = daemon.as_user(alice, "POST", "/v1/jobs", {"spec": {
        "gpus": 0, "register_dataset": "half-done",
        "env": {"ANNOTATOR": "labels", "ANNOTATOR_OPTIONS": "{}"},
        "command": 'echo partial > "$NAI_OUTPUT_DIR/part"; exec sleep 600'}})
    assert made.status == 201, made.json()
    job_id = made.json()["id"]
    out = daemon.state / "jobs" / str(job_id) / "output" / "part"
    wait_for(lambda: out.exists(), what="the job's partial output")
    assert daemon.as_user(alice, "DELETE", f"/v1/jobs/{job_id}").status == 200

    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}").json()
        return job if job["state"] in TERMINAL_STATES else None
    job = wait_for(ended, what="the job's end")
    assert job["state"] == "cancelled", job
    assert job.get("output_tree"), job  # collected, as any job's outputs
    assert job.get("registered") is None, job
    assert daemon.as_user(alice, "GET", "/v1/datasets/half-done").status == 404


def test_a_look_alike_spec_gets_no_app_relay_and_no_plugin_lineage(
        daemon: Daemon, make_user: Any) -> None:
    # The variables a processing job or an annotate session reads are any spec's to
    # set; the lineage a version records follows the server's own mark.
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    gate = daemon.root / f"gate-{alice.name}"
    made = daemon.as_user(alice, "POST", "/v1/jobs", {"spec": {
        "gpus": 0, "register_dataset": "look-alike",
        "env": {"ANNOTATOR": "labels", "ANNOTATOR_OPTIONS": "{}",
                "PROCESSOR": "split", "PROCESSOR_OPTIONS": "{}"},
        "command": f'echo x > "$NAI_OUTPUT_DIR/x"; while [ ! -e {gate} ]; do sleep 0.1;'
                   f' done'}})
    assert made.status == 201, made.json()
    job_id = made.json()["id"]
    wait_for(lambda: daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}").json()["state"]
             == "running", what="the job to run")
    assert daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}/app/").status == 404
    gate.touch()

    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}").json()
        return job if job["state"] in TERMINAL_STATES else None
    job = wait_for(ended, what="the job's end")
    assert job["state"] == "succeeded" and job["registered"] == "look-alike@1", job
    version = daemon.as_user(alice, "GET", "/v1/datasets/look-alike/versions/1").json()
    lineage = version["metadata"]["lineage"]
    assert "annotator" not in lineage and "processor" not in lineage, lineage
