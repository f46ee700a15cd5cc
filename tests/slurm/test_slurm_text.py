"""What nai says to Slurm and how it reads Slurm's answers (no cluster needed)."""

from __future__ import annotations

import json
import subprocess

import pytest

from nai_server.core.spec import SpecError, spec_from_dict
from nai_server.core.states import JobState
from nai_server.host.launchers import slurm_text as st


def _squeue(*jobs: object) -> str:
    return json.dumps({"meta": {}, "errors": [], "jobs": list(jobs)})


def test_squeue_json_gives_states_reasons_and_exit_codes() -> None:
    jobs = st.parse_squeue_json(_squeue(
        {"job_id": 7, "name": "nai-k-1-0", "user_id": 1001, "job_state": "PENDING",
         "state_reason": "Resources", "exit_code": 0, "start_time": 1828145743,
         "end_time": 0},
        {"job_id": 8, "name": "a|b c", "user_id": 1001, "job_state": "RUNNING",
         "state_reason": "None", "exit_code": 0, "start_time": 1796609743,
         "nodes": "n1"},
        {"job_id": 9, "name": "x", "user_id": 0, "job_state": "FAILED",
         "exit_code": 768, "start_time": 10, "end_time": 20},
        {"job_id": 10, "name": "y", "user_id": 0, "job_state": "CANCELLED",
         "exit_code": 15, "start_time": 10, "end_time": 20},
        "not a job", {"job_id": True, "job_state": "RUNNING"}, {"name": "no id"}))
    assert sorted(jobs) == [7, 8, 9, 10]
    assert (jobs[7].phase, jobs[7].reason, jobs[7].start) == ("pending", "Resources", None)
    assert (jobs[8].phase, jobs[8].name, jobs[8].start, jobs[8].nodes) == (
        "running", "a|b c", 1796609743.0, "n1")
    assert (jobs[9].phase, jobs[9].exit_code, jobs[9].end) == ("ended", 3, 20.0)
    assert jobs[10].exit_code == 128 + 15
    assert st.parse_squeue_json("not json") == {}
    assert st.parse_squeue_json("[1, 2]") == {}


def test_sacct_lines_are_read_and_steps_skipped() -> None:
    text = ("12|COMPLETED|0:0|1001|2026-12-07T02:15:43|2026-12-07T02:15:50|n1\n"
            "12.batch|COMPLETED|0:0|1001|x|y|n1\n"
            "13|CANCELLED by 0|0:15|1001|Unknown|Unknown|\n"
            "14|FAILED|3:0|1001|||n1\n")
    jobs = st.parse_sacct(text, epoch=lambda v: 5.0 if v.startswith("2026") else None)
    assert sorted(jobs) == [12, 13, 14]
    assert (jobs[12].name, jobs[12].exit_code, jobs[12].start) == ("", 0, 5.0)
    assert (jobs[13].state, jobs[13].exit_code, jobs[13].start) == ("CANCELLED", 143, None)
    assert (jobs[14].state, jobs[14].exit_code, jobs[14].phase) == ("FAILED", 3, "ended")


@pytest.mark.parametrize(("state", "phase", "ends_as"), [
    ("PENDING", "pending", None), ("REQUEUED", "pending", None),
    ("RUNNING", "running", None), ("COMPLETING", "running", None),
    ("COMPLETED", "ended", None), ("FAILED", "ended", None),
    ("OUT_OF_MEMORY", "ended", None),
    ("TIMEOUT", "ended", JobState.TIMED_OUT), ("PREEMPTED", "ended", JobState.PREEMPTED),
    ("CANCELLED", "ended", JobState.CANCELLED), ("NODE_FAIL", "ended", JobState.LOST),
])
def test_slurm_states_map_onto_nai_states(state: str, phase: str,
                                          ends_as: JobState | None) -> None:
    assert st.phase(state) == phase
    assert st.ended_as(state) == ends_as


def test_sbatch_ids_and_time_limits() -> None:
    assert st.parse_sbatch("123\n") == 123
    assert st.parse_sbatch("124;cluster\n") == 124
    with pytest.raises(ValueError):
        st.parse_sbatch("Submitted batch job 5")
    assert st.time_arg(1) == "0-00:01:00"
    assert st.time_arg(90) == "0-00:02:00"
    assert st.time_arg(2 * 86400 + 3600) == "2-01:00:00"


def test_sbatch_line_passes_the_spec_keys_through() -> None:
    spec = spec_from_dict({"command": "x", "gpus": 2, "nodes": 2, "partition": "gpu",
                           "qos": "high", "cpus_per_gpu": 8, "memory": "4GiB",
                           "preemptible": True})
    sub = st.Submission(name="nai-k-3-0", comment="nai job 3", job_dir="/s/jobs/3",
                        log="/s/jobs/3/log", cwd="/s/jobs/3/code", uid=1001, gid=1002)
    argv = st.sbatch_argv(sub, spec, 3600, "default", "acct", ["--exclusive"])
    assert argv[:2] == ["sbatch", "--parsable"]
    for arg in ("--job-name=nai-k-3-0", "--uid=1001", "--gid=1002", "--gres=gpu:2",
                "--nodes=2", "--time=0-01:00:00", "--mem=4096M", "--cpus-per-gpu=8",
                "--partition=gpu", "--account=acct", "--qos=high", "--requeue",
                "--chdir=/s/jobs/3/code", "--output=/s/jobs/3/log"):
        assert arg in argv, arg
    assert argv[-1] == "--exclusive"
    plain = st.sbatch_argv(sub, spec_from_dict({"command": "x", "gpus": 0}), None, None, None)
    assert not any(a.startswith(("--gres", "--time", "--partition", "--account")) for a in plain)
    assert "--no-requeue" in plain


def test_the_batch_script_runs_the_command_as_written() -> None:
    command = 'printf "%s|%s\\n" "$1" \'it\'"\'"\'s\'; exit 7'
    script = st.batch_script(command, ("a b; rm -rf /",))
    done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (7, "a b; rm -rf /|it's\n")


@pytest.mark.parametrize(("key", "value"), [
    ("nodes", 0), ("nodes", True), ("nodes", "2"), ("nodes", 1025),
    ("cpus_per_gpu", 0), ("partition", "gpu --uid=0"), ("account", "-x"),
    ("qos", "a;b"), ("partition", ""),
])
def test_slurm_spec_keys_refuse_what_is_not_a_name_or_count(key: str, value: object) -> None:
    with pytest.raises(SpecError, match=key):
        spec_from_dict({"command": "x", key: value})


def test_slurm_spec_keys_take_names_and_counts() -> None:
    spec = spec_from_dict({"command": "x", "nodes": 4, "cpus_per_gpu": 12,
                           "partition": "gpu-a100", "account": "proj_1", "qos": "high.prio"})
    assert (spec.nodes, spec.cpus_per_gpu, spec.partition, spec.account, spec.qos) == (
        4, 12, "gpu-a100", "proj_1", "high.prio")
    assert spec_from_dict({"command": "x"}).nodes == 1


@pytest.mark.parametrize(("message", "final"), [
    ("sbatch failed (exit 1): sbatch: error: Batch job submission failed: Requested node "
     "configuration is not available", True),
    ("sbatch: error: Batch job submission failed: Invalid partition name specified", True),
    ("sbatch: error: Batch job submission failed: Job violates accounting/QOS policy", True),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition "
     "combination specified", True),
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller "
     "(connect failure)", False),
    ("sbatch did not answer within 30s (is slurmctld up?)", False),
    ("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
     False),
])
def test_a_refusal_fails_the_job_and_an_absent_controller_is_retried(message: str,
                                                                     final: bool) -> None:
    assert st.refused(message) is final
