"""What nai says to Slurm and how it reads Slurm's answers: the sbatch command line
and batch script for a job, and the parsing of squeue's JSON and sacct's text into
plain records, with Slurm's job states mapped onto nai's. Pure: no process is run here.

Slurm's output can hold user input (job names and comments, anyone's, newlines
included: `scontrol update JobName=$'x\n...'` is accepted), so what nai asks for prints
none: squeue and sacct are asked for ids, states, times and nodes only, and a job's
name is what nai asked for, never what Slurm printed. A text answer that still does
not read as asked (a line that does not parse, an id twice or one not asked for) is
not believed: the parser raises SlurmTextError, and the poll that asked fails."""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Collection, Mapping, Sequence
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


class SlurmTextError(ValueError):
    """Slurm's text answer does not read as what was asked: not believed."""


# `squeue --noheader --Format=...` (text, not --json: 22.05's JSON ignores --jobs and
# --name and so reads the whole queue). No field a user sets (Name, Comment): the
# daemon knows which ids (or which name) it asked for.
SQUEUE_FIELDS = ("JobID", "State", "Reason", "UserID", "StartTime", "EndTime", "NodeList")
SQUEUE_FORMAT = ",".join(f"{f}:|" for f in SQUEUE_FIELDS[:-1]) + f",{SQUEUE_FIELDS[-1]}:"


def _lines(text: str, width: int, what: str) -> list[list[str]]:
    """The '|'-separated lines of a Slurm answer, each `width` fields (no blank line).
    Only '\n' ends a line (str.splitlines would also split on \r, \x1c, \u2028...)."""
    rows = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != width:
            raise SlurmTextError(f"{what} printed a line that does not read as asked: "
                                 f"{line[:200]!r}")
        rows.append(fields)
    return rows


def _add(jobs: dict[int, SlurmJob], job: SlurmJob, asked: Collection[int] | None,
         what: str) -> None:
    if job.slurm_id in jobs:
        raise SlurmTextError(f"{what} printed job {job.slurm_id} twice")
    if asked is not None and job.slurm_id not in asked:
        raise SlurmTextError(f"{what} printed job {job.slurm_id}, which was not asked for")
    jobs[job.slurm_id] = job


def _foreign_kind(value: str) -> bool:
    """An array task ("12_3", "12_[1-5]") or a heterogeneous job's component ("12+0"):
    never nai's (a name lookup finds those of anyone who names a job like nai's)."""
    head, sep, _ = value.replace("+", "_").partition("_")
    return bool(sep) and head.isdigit()


def _job_id(value: str, what: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise SlurmTextError(f"{what} printed a job id that is not one: {value[:40]!r}")
    return int(value)


def parse_squeue_text(text: str, epoch: Any = None, asked: Collection[int] | None = None,
                      name: str = "") -> dict[int, SlurmJob]:
    """`squeue --noheader --Format=<SQUEUE_FORMAT>`: the jobs by Slurm id, without
    their exit codes (squeue's text has none: an ended job's comes from sacct).
    `asked`: the ids asked for (--jobs), None when asked by name; `name`: the name
    asked for (--name), which every job found bears. SlurmTextError when a line does
    not parse, or an id comes twice or was not asked for."""
    jobs: dict[int, SlurmJob] = {}
    when = epoch or (lambda _: None)
    for fields in _lines(text, len(SQUEUE_FIELDS), "squeue"):
        slurm_id, state, reason, uid, start, end, nodes = fields
        if _foreign_kind(slurm_id):
            continue
        state = _state(state)
        _add(jobs, SlurmJob(
            slurm_id=_job_id(slurm_id, "squeue"), name=name,
            uid=int(uid) if uid.isdigit() and len(uid) < 11 else None,
            state=state, reason=reason[:MAX_REASON],
            start=when(start) if state not in PENDING_STATES else None,
            end=when(end) if phase(state) == "ended" else None, nodes=nodes), asked, "squeue")
    return jobs


SACCT_FIELDS = ("JobIDRaw", "State", "ExitCode", "UID", "Start", "End", "NodeList")


def parse_sacct(text: str, epoch: Any = None, asked: Collection[int] | None = None,
                last_wins: bool = False) -> dict[int, SlurmJob]:
    """`sacct -n -P -o <SACCT_FIELDS>` (or `sacct -c`): the jobs by Slurm id, nameless
    (no JobName: it is free text). Job steps (`123.batch`) are skipped. `epoch` turns
    Slurm's local times into seconds. `last_wins`: the completion log (`-c`) holds a
    line for each time a requeued job ended, oldest first, and the last one stands;
    else an id twice is not believed. SlurmTextError as with squeue."""
    jobs: dict[int, SlurmJob] = {}
    for fields in _lines(text, len(SACCT_FIELDS), "sacct"):
        slurm_id, state, code, uid, start, end, nodes = fields
        head, dot, step = slurm_id.partition(".")
        if dot and head.isdigit() and step:
            continue
        job = SlurmJob(
            slurm_id=_job_id(slurm_id, "sacct"), name="",
            uid=int(uid) if uid.isdigit() and len(uid) < 11 else None,
            state=_state(state), exit_code=_exit_code(code),
            start=epoch(start) if epoch else None, end=epoch(end) if epoch else None,
            nodes=nodes)
        if last_wins:
            jobs.pop(job.slurm_id, None)
        _add(jobs, job, asked, "sacct")
    return jobs


def _exit_code(code: str) -> int | None:
    """Slurm's "status:signal" ("3:0", "0:9") as a shell reports it (3, 137)."""
    status, _, signal = code.partition(":")
    if not status.isdigit() or len(status) > 9:
        return None
    return int(status) or (128 + int(signal) if signal.isdigit() and len(signal) < 4
                           and int(signal) else 0)


def parse_scontrol_exit(text: str, slurm_id: int) -> int | None:
    """The exit code in `scontrol -o show job ID` (its `ExitCode=3:0`) of a job that
    has ended, or None (a running job's says 0:0). 22.05's scontrol has no --json, and
    a job's name or comment can hold " JobState=COMPLETED ExitCode=0:0": an answer with
    any of JobId=, JobState= or ExitCode= other than once, or about another job, is not
    believed (SlurmTextError)."""
    words = [w.split("=", 1) for w in text.split() if "=" in w]
    fields: dict[str, str] = {}
    for key, value in words:
        if key in ("JobId", "JobState", "ExitCode") and key in fields:
            raise SlurmTextError(f"scontrol printed {key}= twice for job {slurm_id}")
        fields[key] = value
    if fields.get("JobId") != str(slurm_id) or "JobState" not in fields:
        raise SlurmTextError(f"scontrol did not tell of job {slurm_id}")
    if phase(_state(fields["JobState"])) != "ended":
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


# --- replicas of services, as Slurm jobs (launchers/slurm_replicas) --------------------

_TIME = re.compile(r"(\d{1,5}-)?\d{1,5}(:\d{2}){0,2}")


def partition_max_time(text: str, partition: str | None) -> str:
    """`--time` for a replica (which runs until stopped): the partition's MaxTime from
    `scontrol show partition -o` (`partition`, else the one marked Default=YES), or
    UNLIMITED where it has none or its answer does not read as a time."""
    for line in text.split("\n"):
        fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
        if not fields.get("PartitionName"):
            continue
        if fields["PartitionName"] == partition or (
                partition is None and fields.get("Default") == "YES"):
            value = fields.get("MaxTime", "")
            return value if _TIME.fullmatch(value) else "UNLIMITED"
    return "UNLIMITED"


def replica_sbatch_argv(sub: Submission, gpus: int, time_limit: str, memory: int | None,
                        cpus: float | None, partition: str | None, account: str | None,
                        extra: Sequence[str] = ()) -> list[str]:
    """The sbatch command line for a service's replica: never requeued (the supervisor
    starts a new one), for as long as the partition allows (`time_limit`)."""
    argv = ["sbatch", "--parsable", f"--job-name={sub.name}", f"--comment={sub.comment}",
            f"--chdir={sub.cwd}", f"--output={sub.log}", "--open-mode=append",
            "--export=ALL", "--no-requeue", f"--time={time_limit}"]
    if sub.uid is not None:
        argv += [f"--uid={sub.uid}", f"--gid={sub.gid if sub.gid is not None else sub.uid}"]
    if gpus:
        argv.append(f"--gres=gpu:{gpus}")
    if memory:
        argv.append(f"--mem={max(1, memory >> 20)}M")
    if cpus:
        argv.append(f"--cpus-per-task={math.ceil(cpus)}")
    for flag, value in (("partition", partition), ("account", account)):
        if value:
            argv.append(f"--{flag}={value}")
    return [*argv, *extra]
