"""A cancelled (or timed out) `nai dataset annotate` session keeps its labels: its
outputs become the dataset's next version all the same. That is the annotate
request's to decide, not the job's: a job whose own spec sets the ANNOTATOR variable
is an ordinary job, and its partial outputs are not registered when it is stopped."""

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
