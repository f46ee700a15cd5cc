"""Services' replicas as Slurm jobs (`launcher: slurm`): `SlurmReplicaHost` has the
methods of `ReplicaHost` that the supervisor calls, but a replica is submitted with
sbatch instead of started here, and Slurm places it (`places_gpus = False`: the
supervisor asks for a count, `--gres=gpu:N`).

A replica's directory is built as on one server (its model read-only, `run/` the
owner's), on the state dir that the compute nodes share. It is submitted as its owner
(`--uid/--gid`), for as long as its partition allows (`--time` = MaxTime, UNLIMITED
where there is none), never requeued (`--no-requeue`: the supervisor starts a new one
if it ends), with its log as `--output`. Its handle is "slurm:ID".

The proxy reaches a replica on whichever node it runs through the authenticated TCP
link (host/replica_link, serving/link): a token per run, proved both ways. nai's own
server (a model with `predict.py`) speaks it; a model's own `serve:` command listens on
its unix socket on the node, behind nai's relay (serving/relay) in the same job.

Slurm is asked about replicas in the run loop's one squeue a poll (SlurmRuntime asks
for the ids and names this host hands it): `status` reads that view. Until a poll has
come after a replica was first asked about, its status is "unknown" (the supervisor
waits); a replica Slurm holds pending is "queued", with Slurm's reason (`waiting`).
Nothing is submitted twice: before sbatch, root's `slurm.job` in the replica's
directory says "submitting"; a daemon that died there looks the replica's job up by
its name (`nai-KEY-svc-DIR`, owned by the service's user) before it starts another.

Stopping: SIGTERM is `scancel --signal=TERM --full` (a pending job is cancelled
outright), SIGKILL `scancel` (Slurm's KillWait, then SIGKILL).
"""

from __future__ import annotations

import json
import logging
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from nai_server.core.service_rules import DEFAULT_COMMAND
from nai_server.host import replica_link
from nai_server.host.launchers import slurm_record, slurm_text
from nai_server.host.launchers.slurm import SlurmError
from nai_server.host.launchers.slurm_text import SlurmJob
from nai_server.host.replicas import (
    MODEL_DIR,
    SOCKET_DIR,
    UNKNOWN,
    Owner,
    ReplicaHost,
    ReplicaRefused,
    ReplicaStart,
)
from nai_server.store.blobs import BlobStore

if TYPE_CHECKING:
    from nai_server.host.launchers.slurm_runtime import SlurmRuntime

log = logging.getLogger("nai.slurm")

PREFIX = "slurm:"
SERVICE_FILE = "service"  # root's, in the replica's directory: {"service", "user"}
PARTITION_EVERY = 600.0  # seconds a partition's MaxTime is kept before it is read again


def slurm_id(handle: str | None) -> int | None:
    """The Slurm id in a handle "slurm:ID"; None for another kind."""
    value = (handle or "")[len(PREFIX):] if (handle or "").startswith(PREFIX) else ""
    return int(value) if value.isdigit() and len(value) < 19 else None


class SlurmReplicaHost(ReplicaHost):
    """Replicas submitted to Slurm and watched through the runtime's squeue."""

    places_gpus = False

    def __init__(self, root: Path, blobs: BlobStore, personal: bool,
                 runtime: SlurmRuntime) -> None:
        super().__init__(root, blobs, personal)  # no cgroups: Slurm's own, on the node
        self.runtime = runtime
        self.slurm = runtime.slurm
        self._lock = threading.Lock()  # the supervisor's thread adds, the loop's reads
        self._ids: dict[int, float] = {}  # Slurm id -> when first asked about
        self._names: dict[str, float] = {}  # job names looked up (mid-submit crashes)
        self._max_time: tuple[float, str] | None = None
        self._served: dict[int, tuple[str, str]] = {}  # Slurm id -> (service, user)

    # --- what the runtime's poll asks squeue -------------------------------------------

    def asked(self) -> tuple[set[int], list[str]]:
        """The Slurm ids and job names the next squeue must ask about."""
        with self._lock:
            return set(self._ids), sorted(self._names)

    def _ask(self, slurm_id: int) -> float:
        with self._lock:
            return self._ids.setdefault(slurm_id, self.runtime.clock())

    def _seen(self, asked_at: float) -> dict[int, SlurmJob] | None:
        """The runtime's view, if a poll came after `asked_at`; None: not yet."""
        polled = self.runtime.polled_at  # before the view: the view is as new, or newer
        view = self.runtime.view
        return view if polled is not None and polled > asked_at else None

    def name(self, where: Path) -> str:
        return f"nai-{self.runtime.key}-svc-{where.name}"

    # --- starting -----------------------------------------------------------------------

    def start(self, start: ReplicaStart) -> str:
        self.build(start)
        where, owner = start.dir, start.owner
        env, command = self.environment(start)
        env.pop("CUDA_VISIBLE_DEVICES", None)  # Slurm sets it from the GPUs it gives
        # Reached over the TCP link on any node: nai's server speaks it itself, a
        # model's own server (on its unix socket) through the relay beside it.
        replica_link.write_token(where, owner.uid, owner.gid)
        env["NAI_SERVE_TOKEN_FILE"] = str(where / replica_link.TOKEN)
        env["NAI_SERVE_ADDRESS_FILE"] = str(where / SOCKET_DIR / replica_link.ADDRESS)
        if start.command == DEFAULT_COMMAND:
            del env["NAI_SERVE_SOCKET"]
        else:
            command = (f"exec {shlex.quote(sys.executable)} -m nai_server.serving.relay -- "
                       f"/bin/sh -c {shlex.quote(command)}")
        slurm_record.write(where, 0, None)  # on disk before Slurm hears of the replica
        served = (env.get("NAI_SERVICE", ""), owner.user)
        (where / SERVICE_FILE).write_text(json.dumps(dict(zip(("service", "user"), served,
                                                              strict=True))))
        log_path = slurm_record.owners_log(where, owner.uid, owner.gid)
        settings = self.runtime.config.slurm
        sub = slurm_text.Submission(
            name=self.name(where), comment=f"nai service {env.get('NAI_SERVICE', '')}",
            job_dir=str(where), log=str(log_path), cwd=str(where / MODEL_DIR),
            uid=owner.uid, gid=owner.gid)
        argv = slurm_text.replica_sbatch_argv(
            sub, len(start.gpus) or start.gpus_wanted, self._partition_max_time(),
            start.memory, start.cpus, settings.partition,
            settings.accounts.get(start.group) if start.group else None, settings.sbatch_args)
        try:
            new_id = self.slurm.submit(argv, slurm_text.batch_script(command, ()), env)
        except SlurmError as exc:
            if not slurm_text.refused(str(exc)):
                raise  # slurmctld away or slow: restarted after a backoff
            (where / slurm_record.RECORD).unlink()  # nothing was submitted
            raise ReplicaRefused(f"Slurm refused it: {exc}") from exc
        try:
            slurm_record.write(where, 0, new_id)
        except BaseException:  # it must not run unwatched
            self.slurm.cancel(new_id)
            raise
        self._ask(new_id)
        self._served[new_id] = served
        self.runtime.poll_soon()
        log.info("replica %s submitted as Slurm job %s", where.name, new_id)
        return f"{PREFIX}{new_id}"

    def _partition_max_time(self) -> str:
        now = self.runtime.clock()
        if self._max_time is None or now - self._max_time[0] >= PARTITION_EVERY:
            try:
                text = self.slurm.partitions()
            except SlurmError as exc:
                log.warning("cannot read Slurm's partitions (replicas ask for UNLIMITED): "
                            "%s", exc)
                text = ""
            self._max_time = (now, slurm_text.partition_max_time(
                text, self.runtime.config.slurm.partition))
        return self._max_time[1]

    # --- watching -----------------------------------------------------------------------

    def status(self, where: Path, handle: str) -> str:
        found = slurm_id(handle)
        if found is None:
            return "vanished"
        view = self._seen(self._ask(found))
        self._remember(where, found)
        if view is None:
            return "unknown"
        sj = view.get(found)
        if sj is None:  # forgotten (MinJobAge) or never known: gone either way
            return "vanished"
        return {"pending": "queued", "running": "running"}.get(sj.phase, "exited")

    def gpus_placed(self, handle: str | None, wanted: int) -> int:
        """The GPUs a replica asked for (`--gres=gpu:N`) while the last squeue saw its
        job running: held, as a job's, though nai does not know which they are. None
        while it is pending, or once it ended."""
        found = slurm_id(handle)
        sj = self.runtime.view.get(found) if found is not None else None
        return wanted if sj is not None and sj.phase == "running" else 0

    def exit_code(self, where: Path, handle: str) -> int | None:
        """Not known here (squeue does not say): a replica Slurm ran is restarted with
        backoff whatever its status, as any that died."""
        return None

    def service_of(self, found: int) -> tuple[str, str] | None:
        """The service and user of a replica's Slurm job (`nai gpus`), from its
        directory's record (root's): None for a Slurm job that is no replica of ours."""
        return self._served.get(found)

    def _remember(self, where: Path, found: int) -> None:
        if found in self._served:
            return
        try:
            said = json.loads((where / SERVICE_FILE).read_text())
            self._served[found] = (str(said["service"]), str(said["user"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def waiting(self, handle: str) -> str:
        found = slurm_id(handle)
        sj = self.runtime.view.get(found) if found is not None else None
        reason = sj.reason if sj is not None and sj.reason not in ("", "None") else "Submitted"
        return f"waiting in Slurm (job {found}): {reason}"

    def adopt(self, where: Path, owner: Owner) -> str | None:
        """The Slurm job of a replica whose launch the daemon died in: from the record,
        or by its name and owner; UNKNOWN until squeue has been asked."""
        record = slurm_record.read(where)
        if record is None:  # never given to sbatch
            return None
        if record.slurm_id is not None:
            return f"{PREFIX}{record.slurm_id}"
        name = self.name(where)
        with self._lock:
            asked_at = self._names.setdefault(name, self.runtime.clock())
        view = self._seen(asked_at)
        if view is None:
            return UNKNOWN
        with self._lock:
            self._names.pop(name, None)
        found = [sj for sj in view.values()
                 if sj.name == name and sj.uid == owner.expected_uid]
        if not found:
            return None
        adopted = min(sj.slurm_id for sj in found)
        slurm_record.write(where, 0, adopted)
        self._ask(adopted)
        log.info("replica %s: adopted Slurm job %s", where.name, adopted)
        return f"{PREFIX}{adopted}"

    def alive(self, handle: str) -> bool:
        found = slurm_id(handle)
        sj = self.runtime.view.get(found) if found is not None else None
        return sj is not None and sj.phase != "ended"

    def signal(self, handle: str, sig: int = signal.SIGTERM) -> None:
        found = slurm_id(handle)
        if found is None:
            return
        sj = self.runtime.view.get(found)
        gently = sig != signal.SIGKILL and (sj is None or sj.phase == "running")
        try:
            self.slurm.cancel(found, "TERM" if gently else None)
        except SlurmError as exc:  # ended meanwhile, or slurmctld away: the next step
            log.warning("replica (Slurm job %s): %s", found, exc)

    def remove(self, where: Path) -> None:
        record = slurm_record.read(where)
        with self._lock:
            if record is not None and record.slurm_id is not None:
                self._ids.pop(record.slurm_id, None)
                self._served.pop(record.slurm_id, None)
            self._names.pop(self.name(where), None)
        super().remove(where)
