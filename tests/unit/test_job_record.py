"""The typed job record: one place for a stored job's keys, defaults and encodings."""

from __future__ import annotations

import pytest

from nai_server.core.job import Job, Pin, Run, Stop, changes_doc
from nai_server.core.spec import JobSpec, spec_to_dict
from nai_server.core.states import JobState

SUBMITTED = {"id": 7, "user": "alice", "group": None, "state": "queued",
             "spec": spec_to_dict(JobSpec(command="python train.py", gpus=2)),
             "code_tree": None, "submitted_at": 1.5, "time_limit": 3600,
             "dataset": {"name": "d", "version": 2, "tree_id": "t" * 64}}


def test_a_submitted_document_round_trips_unchanged() -> None:
    job = Job.from_doc(SUBMITTED)
    assert job.state is JobState.QUEUED and job.spec.gpus == 2 and job.name == "job-7"
    assert job.dataset == Pin("d", 2, "t" * 64) and job.model is None
    assert job.to_doc() == SUBMITTED  # no key gained while it is at its default


def test_missing_keys_take_the_records_defaults() -> None:
    job = Job.from_doc({"id": 3, "state": "running", "spec": {"command": "true"}})
    assert job.spec.gpus == 1 and job.spec.priority == "normal" and job.spec.after == ()
    assert job.pid is None and job.pid_start == -1 and job.gpus == () and job.stop is None
    assert job.active and not job.terminal


def test_a_preempted_run_round_trips_and_unknown_keys_are_kept() -> None:
    doc = {**SUBMITTED, "state": "running", "pid": 42, "pid_start": 9, "gpus": [0, 1],
           "runs": [[1.0, 5.0, 2]], "attained": 4.0, "preemptions": 1,
           "stop": {"kind": "preempted", "at": 6.0, "deadline": 36.0, "killed": False,
                    "for_job": 8},
           "note_from_a_newer_daemon": {"x": 1}}
    job = Job.from_doc(doc)
    assert job.runs == (Run(1.0, 5.0, 2),) and job.gpus == (0, 1)
    assert job.stop == Stop(JobState.PREEMPTED, 6.0, 36.0, for_job=8)
    assert job.extra == {"note_from_a_newer_daemon": {"x": 1}}
    assert job.to_doc() == doc


def test_changes_are_encoded_and_unknown_fields_refused() -> None:
    assert changes_doc(state=JobState.FAILED, gpus=(1,), stop=None) == {
        "state": "failed", "gpus": [1], "stop": None}
    with pytest.raises(TypeError, match="no field 'gpu'"):
        changes_doc(gpu=(1,))
