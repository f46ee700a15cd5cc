"""How a job's end is written: the state it ends in and why, its outputs registered as
a model version when it asked for that, and a preempted job's return to the queue.

The run loop decides that a job's process has ended (and collects its outputs); this
module turns that into the job's record."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nai_server.app.accounts import Caller
from nai_server.app.finetune_origin import finetune_origin
from nai_server.app.ports import JobStore
from nai_server.app.registry import Registry
from nai_server.core.job import Job, Run, Stop
from nai_server.core.registry_rules import Kind
from nai_server.core.states import JobState, transition
from nai_server.core.units import format_duration
from nai_server.host import jobdir, mounts
from nai_server.host.collection import Ended

log = logging.getLogger("nai.runtime")


def exit_note(code: int | None, env_setup: bool) -> str:
    """Why a job failed, from its exit code: the shell's own codes (126, 127) say what
    went wrong and what to check, since `exit code 127` alone tells a new user nothing."""
    if code == 127:
        return ("exit code 127: most often a command was not found, the job's or one its "
                "env_setup needs (its log says which); check the name, and the PATH its "
                "env_setup gives" if env_setup else
                "exit code 127: most often the shell did not find the command; check the "
                "command's name and PATH in the job's environment (env_setup picks where "
                "python and the rest come from)")
    if code == 126:
        return ("exit code 126: most often the shell found the command but could not run "
                "it; check that the file is executable (chmod +x) and is a program or "
                "script")
    return f"exit code {code}"


class JobEndings:
    """Writes the ends of jobs (and their requeueing) to the job store."""

    def __init__(self, jobs: JobStore, registry: Registry,
                 caller_for: Callable[[str], Caller], job_dir: Callable[[int], Path]) -> None:
        self.jobs = jobs
        self.registry = registry
        self.caller_for = caller_for  # a job's owner, to register its outputs as them
        self.job_dir = job_dir

    def end(self, job: Job, how: Ended, tree: str | None, problem: str | None) -> None:
        """End a job whose process ended (`how`) and whose outputs were collected
        (`tree`) or not (`problem`)."""
        stop = job.stop
        if how.status == "exited":
            # A process the OOM killer took was part of the job's work, whatever its
            # main process made of that: exit 0 then is no success (as Slurm's
            # OUT_OF_MEMORY), and the note says what was killed.
            final = stop.kind if stop else (
                JobState.SUCCEEDED if how.code == 0 and not how.oom else JobState.FAILED)
            message = None if final != JobState.FAILED else (
                exit_note(how.code, job.spec.env_setup is not None) if how.code != 0 else
                "exit code 0, but the kernel killed one of its processes for lack of memory")
        else:
            final = stop.kind if stop else JobState.LOST
            message = None if stop else (
                "the job's process vanished without an exit status (the machine rebooted, "
                "or it was killed from outside nai)")
        self._finish(job, final, how.code, message, how.at, tree, problem, how.note)

    def _finish(self, job: Job, final: JobState, code: int | None, message: str | None,
                now: float, tree: str | None = None, problem: str | None = None,
                note: str | None = None) -> None:
        changes: dict[str, Any] = {"state": transition(job.state, final), "ended_at": now,
                                   "exit_code": code}
        if tree is not None:
            changes["output_tree"] = tree
        elif problem is not None:
            message = f"outputs not collected: {problem}"
        if message or note:
            changes["message"] = "; ".join(m for m in (message, note) if m)
        if final == JobState.SUCCEEDED and job.spec.register_model:
            changes.update(self._register(job, job.spec.register_model, tree))
        elif final == JobState.SUCCEEDED and job.spec.register_dataset:
            changes.update(self._register(job, job.spec.register_dataset, tree, "dataset"))
        self.jobs.update(job.id, **changes)
        log.info("job %s ended: %s (exit %s)", job.id, final, code)
        try:
            self.registry.collect()  # versions kept only for this job may go now
        except Exception:
            log.exception("registry collection after job %s failed", job.id)

    def _register(self, job: Job, name: str, output_tree: str | None,
                  kind: Kind = "model") -> dict[str, str]:
        """`register_model` (`register_dataset`): the outputs as a new model (dataset)
        version. A refusal is noted on the job, which still ends as it did."""
        if output_tree is None:
            return {"message": f"not registered as {kind} {name}: no outputs collected"}
        try:
            metadata = mounts.output_metadata(job, self.job_dir(job.id),
                                                  job.spec.register_metric)
            if kind == "model":  # a fine-tuned model can be fine-tuned again
                metadata.update(finetune_origin(self.registry, mounts.pinned(job, "model"),
                                                job.code_tree, job.spec.command))
            version = self.registry.register_output(
                self.caller_for(job.user), name, output_tree, group=job.group,
                description=f"outputs of job {job.id} ({job.name})",
                metadata=metadata, kind=kind)
        except Exception as exc:
            log.warning("job %s: outputs not registered as %s %s: %s", job.id, kind, name, exc)
            return {"message": f"not registered as {kind} {name}: "
                               f"{getattr(exc, 'message', exc)}"}
        log.info("job %s: outputs registered as %s %s@%s", job.id, kind, name, version.version)
        return {"registered": f"{name}@{version.version}"}

    def requeue(self, job: Job, stop: Stop, now: float) -> None:
        """A preempted job's run has ended: back to the queue, keeping its service so far,
        its submission time (its place by age) and its job directory (its checkpoint)."""
        started = job.started_at or now
        attained = job.attained + max(0.0, now - started)
        runs = (*job.runs, Run(started, now, len(job.gpus) + job.gpus_elsewhere))
        room = (f"to let job {stop.for_job} start" if stop.for_job is not None
                else "for another job")
        killed = ("; it did not exit within the grace period and was killed"
                  if stop.killed else "")
        self.jobs.update(
            job.id,
            state=transition(transition(job.state, JobState.PREEMPTED), JobState.QUEUED),
            attained=attained, runs=runs, preemptions=len(runs), pid=None, pid_start=None,
            gpus=(), gpu_uuids=(), gpus_elsewhere=0, stop=None, started_at=None,
            exit_code=None,
            message=f"preempted at {_when(stop.at)} {room}{killed}; requeued "
                    f"with {format_duration(round(attained))} of service")
        job_dir = self.job_dir(job.id)
        for name in jobdir.RUN_LEFTOVERS:
            (job_dir / name).unlink(missing_ok=True)
        log.info("job %s preempted %s; requeued", job.id, room)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
