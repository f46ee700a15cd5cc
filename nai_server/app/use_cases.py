"""The daemon's use cases, behind the API and the run loop.

`UseCases` is what routes call; `tick(now)` steps the daemon once (reap, probe,
plan, launch) so tests advance time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from nai_server import __version__
from nai_server.app.accounts import Accounts, Caller
from nai_server.app.annotator_services import AnnotatorSessions
from nai_server.app.job_models import JobModels
from nai_server.app.jobs import Jobs
from nai_server.app.processing import Processing
from nai_server.app.registry import Registry
from nai_server.app.services import Services
from nai_server.app.tree_access import TreeAccess
from nai_server.config import ServerConfig
from nai_server.core import trees
from nai_server.core.spec import parse_size
from nai_server.host.gpus import GpuInventory
from nai_server.host.launchers.local import Launcher, LocalLauncher
from nai_server.host.runtime import JobRuntime
from nai_server.plugins import PluginHost, PluginRegistry, PluginStatus
from nai_server.protocol import (
    API_VERSION,
    Conflict,
    Invalid,
    Me,
    NotFound,
    TreeEntryModel,
    TreeInfo,
    TreeRef,
    VersionInfo,
)
from nai_server.store.atomic import CommitLock
from nai_server.store.blobs import (
    BlobStore,
    MissingBlobs,
    PackError,
    PackReceiver,
    StoreCorrupt,
    TreeNotFound,
)
from nai_server.store.db import TinyDbStore
from nai_server.store.gc import StoreCollector, marks_in
from nai_server.store.verify import StoreVerifier, references_in


class UseCases:
    """One daemon's state and behaviour; built by `daemon.bootstrap`."""

    def __init__(
        self,
        config: ServerConfig,
        store: TinyDbStore,
        blobs: BlobStore,
        *,
        clock: Callable[[], float] = time.time,
        gpus: GpuInventory,
        gpu_note: str | None = None,
        launcher: Launcher | None = None,
        lock: CommitLock | None = None,
        plugins: PluginRegistry | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.blobs = blobs
        self.clock = clock
        # The one lock around the store; releasing it commits (see CommitLock).
        self.lock = lock or CommitLock()
        self.accounts = Accounts(
            store, self.lock, personal=config.personal, admins_group=config.admins_group,
            clock=clock,
        )
        self.gpus = gpus
        self.gpu_note = gpu_note
        self.registry = Registry(store, self.lock, blobs, clock, config.registry)
        runtime_type = JobRuntime
        if config.launcher == "slurm":  # Slurm schedules; nai submits and watches
            from nai_server.host.launchers.slurm_runtime import SlurmRuntime as runtime_type
        self.runtime = runtime_type(
            config, store, blobs, gpus, launcher or LocalLauncher(), self.lock, clock,
            drained=self.accounts.drained, registry=self.registry,
            caller_for=self.accounts.caller_for, notify=self.notify)
        self.runtime.gpu_note = gpu_note
        self.jobs = Jobs(self.runtime, self.notify)
        # Served models; their replicas' GPUs are held for the scheduler (app/services.py).
        self.services = Services(config, store, self.lock, blobs, self.registry,
                                 self.runtime, clock)
        self.runtime.held_elsewhere = self.services.life.running
        self.jobs.gpu_services = self.services.life.gpu_holders
        self.runtime.not_foreign = self.services.life.not_foreign
        # Submit rules and notifiers (DESIGN §12); none unless the config enables them.
        self.plugins = PluginHost(plugins or PluginRegistry.empty(), store, self.lock)
        self.jobs.screen = self.plugins.rules.screen
        self.processing = Processing(self.jobs, self.registry, self.plugins.registry)
        # `nai dataset annotate`: annotators' web apps, as services of their users.
        self.annotating = AnnotatorSessions(config, self.services, self.registry,
                                            self.plugins.registry, blobs,
                                            self.accounts.caller_for)
        # Read rights on trees (DESIGN §6); the registry checks the trees it is given.
        self.trees = TreeAccess(store, self.lock, blobs, Jobs.may_read)
        self.registry.may_read_tree = self.trees.may_read
        # `nai model register JOB`: a finished job's outputs as a model version.
        self.job_models = JobModels(self.jobs, self.registry, blobs, self.runtime.job_dir)
        # `nai-admin store verify`: in a thread of its own, at a bounded read rate.
        self.verifier = StoreVerifier(
            blobs, references_in(store, self.lock), clock=clock,
            rate=config.limits.verify_mib_per_s * (1 << 20))
        # `nai-admin store gc`: frees what nothing refers to. Never beside a verification
        # (it would report as lost what gc deletes under it): both start under one lock.
        self.collector = StoreCollector(blobs, marks_in(store, self.lock), clock=clock)
        self._store_work = threading.Lock()
        # Set by the run loop; notify() wakes it early (e.g. after a submit).
        self.wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def mode(self) -> str:
        return self.config.mode

    def version(self) -> VersionInfo:
        return VersionInfo(api_version=API_VERSION, server_version=__version__,
                           mode=self.config.mode)

    def me(self, caller: Caller) -> Me:
        return Me(user=caller.user, uid=caller.uid, admin=caller.admin,
                  groups=list(caller.groups), mode=self.config.mode)

    def attach_loop(self, loop: asyncio.AbstractEventLoop, wakeup: asyncio.Event) -> None:
        self._loop, self.wakeup = loop, wakeup

    def notify(self) -> None:
        """Ask the run loop for a tick now rather than at the next interval."""
        if self._loop is not None and self.wakeup is not None:
            self._loop.call_soon_threadsafe(self.wakeup.set)

    # --- blobs and trees ----------------------------------------------------------------

    @property
    def tree_limits(self) -> trees.Limits:
        limits = self.config.limits
        return trees.Limits(
            max_file_size=parse_size(limits.max_file_size),
            max_entries=limits.max_tree_entries,
            max_total_size=parse_size(limits.max_tree_size),
        )

    def missing_blobs(self, caller: Caller, digests: list[str]) -> list[str]:
        """The digests the caller must send: for anyone but an admin, those they have
        not uploaded themselves, whether or not the store has them (another user's
        blob is no business of theirs; sending it again costs only their upload)."""
        try:
            if caller.admin:
                return self.blobs.missing(digests)
            return self.blobs.missing_for(caller.user, digests)
        except ValueError as exc:
            raise Invalid(str(exc)) from exc

    def blob_receiver(self, caller: Caller) -> _SafeReceiver:
        """A packed upload whose blobs are claimed for the caller as they are stored."""
        return _SafeReceiver(self.blobs.receiver(self.tree_limits.max_file_size, caller.user,
                                                 sees_all=caller.admin))

    def create_tree(self, caller: Caller, raw: Sequence[object]) -> TreeRef:
        """Record a tree. Its blobs must be the caller's (uploaded by them, or files of
        a tree they may read); any other is answered as missing, size and all, so the
        answer reveals nothing of blobs they cannot read."""
        try:
            entries = trees.parse_manifest(raw, self.tree_limits)
            if not caller.admin:
                self._check_blobs_readable(caller, entries)
            tree_id = self.blobs.put_tree(entries)
        except trees.TreeError as exc:
            raise Invalid(str(exc), details={"problems": [
                {"path": p, "problem": m} for p, m in exc.problems]}) from exc
        except MissingBlobs as exc:
            raise Conflict(
                f"{len(exc.digests)} blob(s) of this tree are not on the server; upload them "
                f"first (POST /v1/blobs)", details={"missing": exc.digests}) from exc
        self.blobs.claims.record_tree(caller.user, tree_id)
        return TreeRef(id=tree_id, files=sum(1 for e in entries if e.kind == "file"),
                       size=sum(e.size for e in entries))

    def _check_blobs_readable(self, caller: Caller, entries: Sequence[trees.Entry]) -> None:
        digests = list(dict.fromkeys(e.sha256 for e in entries if e.kind == "file"))
        unheld = self.blobs.missing_for(caller.user, digests)
        if unheld:
            readable = self.trees.readable_blobs(caller, set(unheld))
            missing = [d for d in unheld if d not in readable]
            if missing:
                raise MissingBlobs(missing)

    def has_tree(self, tree_id: str, caller: Caller | None = None) -> bool:
        """True if the tree is recorded with all its blobs (and `caller`, when given, may
        read it). A tree whose blob the store lost is not held: told so, a client sends
        the tree again, and its upload restores the blob."""
        try:
            if caller is not None:
                if not self.trees.may_read(caller, tree_id):
                    return False
            elif not self.blobs.has_tree(tree_id):
                return False
            return not self.blobs.tree_missing(tree_id)
        except (ValueError, TreeNotFound, StoreCorrupt):
            return False

    def _check_readable(self, tree_id: str, caller: Caller | None) -> None:
        """NotFound, exactly as for an unknown tree, unless `caller` may read it (None:
        the route checked already, e.g. a job's outputs)."""
        if caller is not None and not self.trees.may_read(caller, tree_id):
            raise NotFound(f"no tree {tree_id!r} on this server")

    def _entries(self, tree_id: str) -> tuple[trees.Entry, ...]:
        try:
            return self.blobs.get_tree(tree_id)
        except (TreeNotFound, ValueError) as exc:
            raise NotFound(f"no tree {tree_id!r} on this server") from exc

    @staticmethod
    def _tree_info(tree_id: str, entries: tuple[trees.Entry, ...]) -> TreeInfo:
        return TreeInfo(
            id=tree_id,
            entries=[TreeEntryModel(**e) for e in trees.manifest_to_json(entries)],
            files=sum(1 for e in entries if e.kind == "file"),
            size=sum(e.size for e in entries),
        )

    def tree_info(self, tree_id: str, caller: Caller | None = None) -> TreeInfo:
        self._check_readable(tree_id, caller)
        return self._tree_info(tree_id, self._entries(tree_id))

    def tree_tar(self, tree_id: str, path: str = "", paths: list[str] | None = None,
                 caller: Caller | None = None) -> Iterator[bytes]:
        """A streamed tar of the tree (or the part at `path`, or the entries `paths`);
        errors raise before the first chunk so the route can still answer with a status."""
        self._check_readable(tree_id, caller)
        try:
            return self.blobs.iter_tar(tree_id, path, paths)
        except TreeNotFound as exc:
            if not self.blobs.has_tree(tree_id):
                raise NotFound(f"no tree {tree_id!r} on this server") from exc
            raise NotFound(str(exc)) from exc
        except (trees.TreeError, ValueError) as exc:
            raise Invalid(str(exc)) from exc

    def tree_file(self, tree_id: str, path: str, caller: Caller | None = None
                  ) -> TreeEntryModel:
        """The file at `path` of a tree the caller may read, checked to be in the store
        (once its bytes stream, no status can be sent)."""
        entry = next((e for e in self.tree_info(tree_id, caller).entries
                      if e.path == path and e.kind == "file"), None)
        if entry is None:
            raise NotFound(f"tree {tree_id} has no file {path!r}")
        if not self.blobs.has(entry.sha256):
            raise Conflict(f"{path!r} of tree {tree_id} is missing from the server's blob "
                           "store; ask the server's admin (the store is damaged)")
        return entry

    def blob_chunks(self, digest: str, chunk: int = 1 << 20, offset: int = 0
                    ) -> Iterator[bytes]:
        with self.blobs.open(digest) as f:
            f.seek(offset)
            while data := f.read(chunk):
                yield data

    # --- store checks and gc (admins) -------------------------------------------------

    def start_verify(self, repair: bool) -> dict[str, Any]:
        """Start `nai-admin store verify`; Conflict while it or a gc runs."""
        with self._store_work:
            if self.collector.running():
                raise Conflict("a store gc is running; wait for it to end (`nai-admin store "
                               "gc --status`), then verify")
            return self.verifier.start(repair)

    def start_gc(self, grace: float, dry_run: bool) -> dict[str, Any]:
        """Start `nai-admin store gc`; Conflict while it or a verification runs."""
        with self._store_work:
            if self.verifier.report()["state"] == "running":
                raise Conflict("a store verification is running; wait for it to end "
                               "(`nai-admin store verify --status`), then run gc")
            return self.collector.start(grace, dry_run)

    def tick(self, now: float | None = None) -> None:
        """One pass of the daemon's loop: reap, probe, plan, launch."""
        try:
            self.runtime.tick(now)
        except BaseException:
            self.plugins.notifiers.discard()  # what was noted may not have been committed
            raise
        self.plugins.notifiers.publish()

    def busy(self) -> bool:
        """True while jobs are queued or running (`run --burst` exits when False)."""
        return self.runtime.busy()

    def plugin_list(self) -> list[PluginStatus]:
        """The plugins installed in the daemon's environment and what became of them."""
        return self.plugins.statuses()

    def close(self) -> None:
        self.services.close()
        self.annotating.close()
        self.plugins.close()
        self.verifier.close()
        self.collector.close()
        self.runtime.close()
        with self.lock:
            self.store.close()


class _SafeReceiver:
    """A PackReceiver whose format errors surface as API errors (400)."""

    def __init__(self, inner: PackReceiver) -> None:
        self.inner = inner

    def feed_many(self, chunks: list[bytes]) -> None:
        """Pieces as the network delivered them (joining them first would copy them)."""
        try:
            for chunk in chunks:
                self.inner.feed(chunk)
        except PackError as exc:
            raise Invalid(str(exc)) from exc

    def finish(self) -> list[str]:
        try:
            return self.inner.finish()
        except PackError as exc:
            raise Invalid(str(exc)) from exc

    def abort(self) -> None:
        self.inner.abort()
