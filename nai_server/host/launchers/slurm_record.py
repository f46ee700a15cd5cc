"""`slurm.job`, root's file in a job's directory that ties a nai job's run to its
Slurm job: "<run> -" while sbatch runs (submitting), "<run> <slurm id>" after. The
owner cannot touch it (the job's directory is root's), so a restarted daemon trusts it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RECORD = "slurm.job"
SUBMITTING = "-"


@dataclass(frozen=True)
class Record:
    """What `slurm.job` says: the run it is for, and the Slurm id (None: submitting)."""

    run: int
    slurm_id: int | None


def read(job_dir: Path) -> Record | None:
    try:
        text = (job_dir / RECORD).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    run, _, slurm_id = text.strip().partition(" ")
    if not run.isdigit():
        return None
    return Record(int(run), int(slurm_id) if slurm_id.isdigit() and len(slurm_id) < 19
                  else None)


def write(job_dir: Path, run: int, slurm_id: int | None) -> None:
    """Only "submitting" must reach the disk before sbatch runs; an id lost in a crash
    is found again by the job's name."""
    path = job_dir / RECORD
    tmp = path.with_name(f".{RECORD}.tmp")
    with open(tmp, "w") as out:
        out.write(f"{run} {SUBMITTING if slurm_id is None else slurm_id}\n")
        if slurm_id is None:
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, path)


def owners_log(where: Path, uid: int | None, gid: int | None) -> Path:
    """The log a Slurm job of `uid` writes in `where` (a directory the daemon owns),
    made now and given to the owner: slurmstepd opens it as the owner. Its path."""
    path = where / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_APPEND, 0o640)
    try:
        if uid is not None:
            os.fchown(fd, uid, gid if gid is not None else -1)
    finally:
        os.close(fd)
    return path
