"""What nai says to Slurm and how it reads Slurm's answers: the sbatch command line
and batch script for a job, and the parsing of squeue's JSON and sacct's text into
plain records, with Slurm's job states mapped onto nai's. Pure: no process is run here.

Slurm's output holds user input (job names, comments of other people's jobs), so
parsing never trusts a field to be what it should be: an odd record is skipped, not
fatal, and names are only ever compared, never interpreted."""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from nai_server.core.spec import JobSpec
from nai_server.core.states import JobState

Phase = Literal["pending", "running", "ended"]

# Slurm's job states (squeue --json job_state, sacct State) by what they mean for nai.
PENDING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED",
                            "RESV_DEL_HOLD", "SPECIAL_EXIT", "REQUEUED"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING",
                            "STAGE_OUT", "RESIZING"})
# Ended states whose nai state is not decided by the exit code alone.
ENDED_AS: Mapping[str, JobState] = {
    "TIMEOUT": JobState.TIMED_OUT,
    "DEADLINE": JobState.TIMED_OUT,
    "CANCELLED": JobState.CANCELLED,
    "PREEMPTED": JobState.PREEMPTED,
    "NODE_FAIL": JobState.LOST,
    "BOOT_FAIL": JobState.LOST,
    "REVOKED": JobState.LOST,
}
MAX_REASON = 64  # characters of Slurm's pending reason shown as the wait reason


@dataclass(frozen=True)
class SlurmJob:
    """One Slurm job as squeue or sacct reported it."""

    slurm_id: int
    name: str
    uid: int | None
    state: str  # Slurm's, upper case: PENDING, RUNNING, COMPLETED, TIMEOUT...
    reason: str = ""  # why it is pending ("Resources", "Priority"...)
    exit_code: int | None = None  # as a shell reports it: 128+N for signal N
    start: float | None = None
    end: float | None = None
    nodes: str = ""
    gres: tuple[str, ...] = ()  # squeue's gres_detail: "gpu:2(IDX:0-1)" per node

    @property
    def phase(self) -> Phase:
        return phase(self.state)


def phase(state: str) -> Phase:
    """Whether a job in this Slurm state waits, runs or has ended."""
    if state in PENDING_STATES:
        return "pending"
    if state in RUNNING_STATES:
        return "running"
    return "ended"


def ended_as(state: str) -> JobState | None:
    """The nai state an ended Slurm job ends in, or None when its exit code decides
    (COMPLETED, FAILED, OUT_OF_MEMORY...)."""
    return ENDED_AS.get(state)


def wait_status_code(raw: int) -> int:
    """squeue's exit_code is the raw wait status: 768 is exit 3, 15 is SIGTERM (143)."""
    signal = raw & 0x7F
    return 128 + signal if signal else (raw >> 8) & 0xFF


def _state(value: object) -> str:
    """A job state, upper case; "CANCELLED by 0" (sacct) keeps its first word."""
    if isinstance(value, list):  # later Slurm versions give a list of flags
        value = value[0] if value else ""
    return str(value or "").split(" ")[0].upper()


def _positive(value: object) -> float | None:
    if isinstance(value, dict):  # newer Slurm: {"set": true, "number": N}
        value = value.get("number") if value.get("set", True) else None
    return float(value) if isinstance(value, int | float) and value > 0 else None


def parse_squeue_json(text: str) -> dict[int, SlurmJob]:
    """`squeue --json` output: the jobs by Slurm id; records it cannot read are skipped."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    jobs: dict[int, SlurmJob] = {}
    for raw in (data.get("jobs") if isinstance(data, dict) else None) or ():
        job = _squeue_job(raw)
        if job is not None:
            jobs[job.slurm_id] = job
    return jobs


def _squeue_job(raw: Any) -> SlurmJob | None:
    if not isinstance(raw, dict):
        return None
    slurm_id, uid = raw.get("job_id"), raw.get("user_id")
    if isinstance(slurm_id, bool) or not isinstance(slurm_id, int):
        return None
    state = _state(raw.get("job_state"))
    code = raw.get("exit_code")
    if isinstance(code, dict):  # newer Slurm: {"return_code": N, "signal": {...}}
        code = code.get("return_code")
    ended = phase(state) == "ended"
    gres = raw.get("gres_detail")
    return SlurmJob(
        slurm_id=slurm_id, name=str(raw.get("name") or ""),
        uid=uid if isinstance(uid, int) and not isinstance(uid, bool) else None,
        state=state, reason=str(raw.get("state_reason") or "")[:MAX_REASON],
        exit_code=wait_status_code(code) if ended and isinstance(code, int) else None,
        start=_positive(raw.get("start_time")) if state not in PENDING_STATES else None,
        end=_positive(raw.get("end_time")) if ended else None,
        nodes=str(raw.get("nodes") or ""),
        gres=tuple(g for g in gres if isinstance(g, str))[:4096] if isinstance(gres, list) else ())


# `squeue --noheader --Format=...` (text, not --json: 22.05's JSON ignores --jobs and
# --name and so reads the whole queue). The name comes last, as with sacct.
SQUEUE_FIELDS = ("JobID", "State", "Reason", "UserID", "StartTime", "EndTime", "NodeList",
                 "Name")
SQUEUE_FORMAT = ",".join(f"{f}:|" for f in SQUEUE_FIELDS[:-1]) + f",{SQUEUE_FIELDS[-1]}:"


def parse_squeue_text(text: str, epoch: Any = None) -> dict[int, SlurmJob]:
    """`squeue --noheader --Format=<SQUEUE_FORMAT>`: the jobs by Slurm id, without
    their exit codes (squeue's text has none: an ended job's comes from sacct)."""
    jobs: dict[int, SlurmJob] = {}
    for line in text.splitlines():
        fields = line.split("|", len(SQUEUE_FIELDS) - 1)
        if len(fields) != len(SQUEUE_FIELDS) or not fields[0].isdigit() or len(fields[0]) > 18:
            continue
        slurm_id, state, reason, uid, start, end, nodes, name = fields
        state = _state(state)
        when = epoch or (lambda _: None)
        jobs[int(slurm_id)] = SlurmJob(
            slurm_id=int(slurm_id), name=name, uid=int(uid) if uid.isdigit() else None,
            state=state, reason=reason[:MAX_REASON],
            start=when(start) if state not in PENDING_STATES else None,
            end=when(end) if phase(state) == "ended" else None, nodes=nodes)
    return jobs


SACCT_FIELDS = ("JobIDRaw", "State", "ExitCode", "UID", "Start", "End", "NodeList", "JobName")


def parse_sacct(text: str, epoch: Any = None) -> dict[int, SlurmJob]:
    """`sacct -n -P -o <SACCT_FIELDS>` (or `sacct -c`): the jobs by Slurm id. The name
    comes last so that a '|' in it cannot shift the other fields; job steps
    (`123.batch`) are skipped. `epoch` turns Slurm's local times into seconds."""
    jobs: dict[int, SlurmJob] = {}
    for line in text.splitlines():
        fields = line.split("|", len(SACCT_FIELDS) - 1)
        if len(fields) != len(SACCT_FIELDS) or not fields[0].isdigit():
            continue
        slurm_id, state, code, uid, start, end, nodes, name = fields
        exit_code = _exit_code(code)
        jobs[int(slurm_id)] = SlurmJob(
            slurm_id=int(slurm_id), name=name, uid=int(uid) if uid.isdigit() else None,
            state=_state(state), exit_code=exit_code,
            start=epoch(start) if epoch else None, end=epoch(end) if epoch else None,
            nodes=nodes)
    return jobs


def _exit_code(code: str) -> int | None:
    """Slurm's "status:signal" ("3:0", "0:9") as a shell reports it (3, 137)."""
    status, _, signal = code.partition(":")
    if not status.isdigit() or len(status) > 9:
        return None
    return int(status) or (128 + int(signal) if signal.isdigit() and len(signal) < 4
                           and int(signal) else 0)


def parse_scontrol_exit(text: str) -> int | None:
    """The exit code in `scontrol -o show job ID` (its `ExitCode=3:0`) of a job that
    has ended, or None (a running job's says 0:0)."""
    fields = dict(f.split("=", 1) for f in text.split() if "=" in f)
    if phase(_state(fields.get("JobState"))) != "ended":
        return None
    return _exit_code(fields.get("ExitCode", ""))


# sbatch's own words for a request Slurm will never run (the job fails with them), as
# against a controller that is away or slow (the submit is tried again).
REFUSED = ("Invalid", "invalid", "not available", "Unable to allocate", "denied",
           "not permitted", "exceeds", "violates", "Requested node configuration")
TRANSIENT = ("Unable to contact", "timed out", "Socket timed out", "did not answer",
             "try again", "Resource temporarily unavailable")


def refused(message: str) -> bool:
    """Whether sbatch's error means Slurm will never run the job as asked."""
    return not any(w in message for w in TRANSIENT) and any(w in message for w in REFUSED)


def parse_sbatch(stdout: str) -> int:
    """The job id `sbatch --parsable` printed ("123" or "123;cluster")."""
    first = stdout.strip().split(";")[0]
    if not first.isdigit() or len(first) > 18:
        raise ValueError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return int(first)


def time_arg(seconds: int | float) -> str:
    """`--time` from a limit in seconds: Slurm counts whole minutes, so round up (nai
    ends the job at its exact limit itself)."""
    minutes = max(1, math.ceil(seconds / 60))
    return f"{minutes // 1440}-{minutes % 1440 // 60:02d}:{minutes % 60:02d}:00"


@dataclass(frozen=True)
class Submission:
    """What sbatch needs besides the job's own environment."""

    name: str  # the job name: nai-<daemon key>-<job id>-<run>
    comment: str
    job_dir: str
    log: str
    cwd: str
    uid: int | None = None
    gid: int | None = None


def sbatch_argv(sub: Submission, spec: JobSpec, time_limit: float | None,
                partition: str | None, account: str | None, extra: Sequence[str] = ()
                ) -> list[str]:
    """The sbatch command line for a job (the script comes on stdin)."""
    argv = ["sbatch", "--parsable", f"--job-name={sub.name}", f"--comment={sub.comment}",
            f"--chdir={sub.cwd}", f"--output={sub.log}", "--open-mode=append",
            "--export=ALL", "--requeue" if spec.preemptible else "--no-requeue"]
    if sub.uid is not None:
        argv += [f"--uid={sub.uid}", f"--gid={sub.gid if sub.gid is not None else sub.uid}"]
    if spec.nodes > 1:
        argv += [f"--nodes={spec.nodes}", "--ntasks-per-node=1"]
    if spec.gpus:
        argv.append(f"--gres=gpu:{spec.gpus}")
    if time_limit:
        argv.append(f"--time={time_arg(time_limit)}")
    if spec.memory:
        argv.append(f"--mem={max(1, spec.memory >> 20)}M")
    if spec.cpus_per_gpu and spec.gpus:
        argv.append(f"--cpus-per-gpu={spec.cpus_per_gpu}")
    elif spec.cpus:
        argv.append(f"--cpus-per-task={math.ceil(spec.cpus)}")
    partition = spec.partition or partition
    account = spec.account or account
    for flag, value in (("partition", partition), ("account", account), ("qos", spec.qos)):
        if value:
            argv.append(f"--{flag}={value}")
    return [*argv, *extra]


def batch_script(command: str, args: Sequence[str], nodes: int = 1) -> str:
    """The batch script: the job's command under /bin/sh, as the local launcher runs it.
    On several nodes it runs once per node through srun, which sets each rank."""
    run = " ".join(shlex.quote(a) for a in ("/bin/sh", "-c", command, "nai-job", *args))
    if nodes <= 1:
        return f"#!/bin/sh\nexec {run}\n"
    # MASTER_ADDR: the first node of the allocation; RANK from srun's SLURM_NODEID.
    return (
        "#!/bin/sh\n"
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)\n'
        'MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}\n'
        'WORLD_SIZE=$SLURM_JOB_NUM_NODES\n'
        "export MASTER_ADDR MASTER_PORT WORLD_SIZE\n"
        f"exec srun --nodes=$SLURM_JOB_NUM_NODES --ntasks-per-node=1 --kill-on-bad-exit=1 "
        f"/bin/sh -c 'RANK=$SLURM_NODEID NODE_RANK=$SLURM_NODEID LOCAL_RANK=0; "
        f"export RANK NODE_RANK LOCAL_RANK; exec \"$@\"' nai-rank {run}\n")
