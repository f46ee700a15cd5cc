"""The Slurm launcher: submitting jobs with sbatch, watching them with squeue and
sacct, and stopping them with scancel (DESIGN §10).

Every command runs from the run loop's thread (never the API's event loop), from an
argv list (never a shell), bounded by `slurm.command_timeout`; a command that fails
or times out raises SlurmError, and the caller tries again on a later tick rather
than conclude anything about the job."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from nai_server.config import SlurmConfig
from nai_server.host.launchers import slurm_text
from nai_server.host.launchers.slurm_text import SlurmJob

log = logging.getLogger("nai.slurm")

SBIN = ("/usr/bin", "/usr/local/bin", "/usr/sbin", "/opt/slurm/bin")
MAX_OUTPUT = 64 << 20  # bytes of squeue's JSON read at most (a very busy cluster)
SACCT_BATCH = 200  # job ids per sacct call
SQUEUE_BATCH = 500  # job ids (or names) per squeue call
SCONTROL_MAX = 50  # scontrol calls for exit codes per poll, at most
SACCT_MARGIN = 3600.0  # seconds sacct looks back before the earliest submit asked about


class SlurmError(Exception):
    """A Slurm command failed; the message says which and what it printed."""


class SlurmClient:
    """Slurm's client commands, as root, against the cluster of `config.conf`."""

    def __init__(self, config: SlurmConfig) -> None:
        self.config = config
        self.timeout = config.command_timeout

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        if self.config.conf is not None:
            env["SLURM_CONF"] = str(self.config.conf)
        elif "SLURM_CONF" in os.environ:
            env["SLURM_CONF"] = os.environ["SLURM_CONF"]
        return env

    def which(self, program: str) -> str | None:
        return shutil.which(program, path=os.pathsep.join(
            (os.environ.get("PATH", ""), *SBIN)))

    def run(self, argv: list[str], stdin: str | None = None,
            env: Mapping[str, str] | None = None) -> str:
        """Run one Slurm command; its stdout, or SlurmError."""
        path = self.which(argv[0])
        if path is None:
            raise SlurmError(f"{argv[0]} is not installed on this host (install slurm-client, "
                             f"and point slurm.conf at the cluster's slurm.conf)")
        try:
            done = subprocess.run(
                [path, *argv[1:]], input=stdin, env=self.env(env), capture_output=True,
                text=True, errors="replace", timeout=self.timeout, start_new_session=True,
                stdin=None if stdin is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise SlurmError(f"{argv[0]} did not answer within {self.timeout:g}s "
                             f"(is slurmctld up?)") from exc
        except OSError as exc:
            raise SlurmError(f"{argv[0]} could not run: {exc}") from exc
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip()[-500:]
            raise SlurmError(f"{argv[0]} failed (exit {done.returncode}): {said}")
        return done.stdout[:MAX_OUTPUT]

    # --- the calls the runtime makes ----------------------------------------------------

    def submit(self, argv: list[str], script: str, env: Mapping[str, str]) -> int:
        """sbatch; the new job's Slurm id. `env` is exported to the job (--export=ALL)."""
        return slurm_text.parse_sbatch(self.run(argv, stdin=script, env=env))

    def jobs(self, slurm_ids: Iterable[int] = (), names: Iterable[str] = ()
             ) -> dict[int, SlurmJob]:
        """What squeue says of these jobs (by id) and of the jobs with these names, in
        any state it still remembers: only those, however long the cluster's queue (the
        text form: 22.05's `squeue --json` ignores --jobs and --name). Ended jobs come
        without their exit codes (see `ended`). Jobs found by id are nameless; a job
        found by name bears the name asked for (names are never read from Slurm's
        output: anyone can put a newline in their job's name). SlurmError also when the
        output does not read as asked (a forged line)."""
        found: dict[int, SlurmJob] = {}
        ids = [str(i) for i in sorted(set(slurm_ids))]
        for at in range(0, len(ids), SQUEUE_BATCH):
            batch = ids[at:at + SQUEUE_BATCH]
            try:
                text = self._squeue(f"--jobs={','.join(batch)}")
            except SlurmError as exc:
                # Every id of the batch forgotten: squeue calls that an error.
                if "Invalid job id" in str(exc):
                    continue
                raise
            self._merge(found, text, asked={int(i) for i in batch})
        values = sorted(set(names))
        for at in range(0, len(values), SQUEUE_BATCH):
            batch = values[at:at + SQUEUE_BATCH]
            # Most often none is found (sbatch did not get through): one call says so.
            # Else one a call, to know which name each job bears.
            if len(batch) > 1 and not self._squeue_parsed(f"--name={','.join(batch)}"):
                continue
            for name in batch:
                self._merge(found, self._squeue(f"--name={name}"), name=name)
        return found

    def _squeue_parsed(self, flag: str) -> dict[int, SlurmJob]:
        try:
            return slurm_text.parse_squeue_text(self._squeue(flag))
        except slurm_text.SlurmTextError as exc:
            raise SlurmError(str(exc)) from exc

    def _squeue(self, flag: str) -> str:
        return self.run(["squeue", "--noheader", "--states=all",
                         f"--Format={slurm_text.SQUEUE_FORMAT}", flag])

    def _merge(self, found: dict[int, SlurmJob], text: str, asked: set[int] | None = None,
               name: str = "") -> None:
        try:
            jobs = slurm_text.parse_squeue_text(text, epoch=_epoch, asked=asked, name=name)
        except slurm_text.SlurmTextError as exc:
            raise SlurmError(str(exc)) from exc
        # A job found by name that is already known (by id, or under another name: its
        # owner renamed it meanwhile) stays what it was: no second nai job adopts it.
        found.update({i: j for i, j in jobs.items() if i not in found})

    def queue(self) -> dict[int, SlurmJob]:
        """Every job slurmctld still knows, with the GPUs running ones hold (`nai gpus`
        only: this reads the whole queue, 22.05's JSON ignoring filters)."""
        return slurm_text.parse_squeue_json(self.run(["squeue", "--json", "--states=RUNNING"]))

    def ended(self, slurm_ids: Iterable[int], since: float | None = None
              ) -> dict[int, SlurmJob]:
        """What accounting says of ended jobs (squeue has no exit codes in text, and
        forgets jobs after MinJobAge). `since`: none of them was submitted before then,
        which bounds the search (without it, `sacct -j` searches all of time)."""
        ids = sorted(set(slurm_ids))
        found: dict[int, SlurmJob] = {}
        for at in range(0, len(ids), SACCT_BATCH):
            batch = ",".join(str(i) for i in ids[at:at + SACCT_BATCH])
            argv = ["sacct", "-n", "-P", "-o", ",".join(slurm_text.SACCT_FIELDS), "-j", batch]
            if since is not None:  # local time, as sacct reads it; an hour for clock skew
                argv += ["-S", time.strftime("%Y-%m-%dT%H:%M:%S",
                                             time.localtime(since - SACCT_MARGIN))]
            if self.config.accounting == "jobcomp":
                argv.insert(1, "-c")
            else:
                argv.insert(1, "-X")  # allocations, not their steps
            try:
                found.update(slurm_text.parse_sacct(
                    self.run(argv), epoch=_epoch, asked={int(i) for i in batch.split(",")},
                    last_wins=self.config.accounting == "jobcomp"))
            except slurm_text.SlurmTextError as exc:
                raise SlurmError(str(exc)) from exc
        return found

    def exit_codes(self, slurm_ids: Iterable[int]) -> dict[int, int]:
        """Exit codes of ended jobs slurmctld still holds, one `scontrol` each: for
        when accounting does not answer (or not yet). Jobs it cannot tell are left out."""
        found: dict[int, int] = {}
        for slurm_id in sorted(set(slurm_ids))[:SCONTROL_MAX]:
            try:
                code = slurm_text.parse_scontrol_exit(
                    self.run(["scontrol", "-o", "show", "job", str(slurm_id)]), slurm_id)
            except slurm_text.SlurmTextError as exc:
                log.warning("job %s: %s", slurm_id, exc)
                continue
            except SlurmError:
                continue
            if code is not None:
                found[slurm_id] = code
        return found

    def nodes(self) -> str:
        """`scontrol show node -o`: the cluster's nodes, one a line."""
        return self.run(["scontrol", "show", "node", "-o"])

    def partitions(self) -> str:
        """`scontrol show partition -o`: the cluster's partitions, one a line."""
        return self.run(["scontrol", "show", "partition", "-o"])

    def cancel(self, slurm_id: int, signal: str | None = None) -> None:
        """scancel: with `signal`, only signal the batch script and its steps (the job
        goes on if it survives); without, end it (SIGTERM, KillWait, SIGKILL)."""
        argv = ["scancel"]
        if signal is not None:
            argv += [f"--signal={signal}", "--full"]
        self.run([*argv, str(slurm_id)])


def _epoch(value: str) -> float | None:
    """sacct's local time ("2026-12-07T02:15:43") in seconds; None for Unknown/None."""
    try:
        return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def daemon_key(state: Path) -> str:
    """A short id of this daemon's state dir, in its Slurm job names, so that two nai
    servers on one cluster (or a test's several) never take each other's jobs."""
    path = state / "slurm.key"
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if not (key.isalnum() and len(key) == 8):
        key = os.urandom(4).hex()
        tmp = path.with_name(".slurm.key.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
        os.replace(tmp, path)
    return key
