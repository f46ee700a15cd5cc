"""Annotate sessions (`nai dataset annotate NAME[@V] --with PLUGIN`): an annotator's web
app over a dataset version, run as a service (kind "annotator") of the user who asked.

A session is an ordinary service document (app/services.py keeps its replica running,
as its user, on a CPU slot unless it asked for GPUs, with no time limit), whose source
is the dataset version (mounted read-only in the replica's directory, as a model
version is) and whose command is `nai_server.plugins.annotator_replica`. Its labels go
to a folder of the session's own, `<state>/annotations/<number>/labels/` (the user's,
inside a root-owned 0711 directory), kept across the replica's restarts and the
daemon's. Only this request writes `kind` and `annotation` into a service document:
nothing a user sends makes one (core.processing.is_session).

Who may open it: those who may see the service (its writers; with the default
visibility "group" also the owner's groups' members; "shared" everyone) and who may
also read the source dataset, checked at every request: the app shows the dataset's
files. The gateway (a bearer token, no user) never reaches a session. The daemon names
the caller to the app in `USER_HEADER` (any such header the caller sent is dropped) and
answers `POST /_nai/finish` (the page's "Finish and save") itself, as a stop by the
caller, who must be one of the service's writers.

When the session has stopped or failed and its replica is gone, the supervisor's step
hands it here (`settle`): its folder is read as its user (host.outputs), saved as the
next version of the target dataset (owned by the user, or the session's group) with
lineage (source version, annotator with its version and options, the session, who
labelled), and removed (emptied as its user, host.user_folders: the daemon never walks
it); the service's document says which version (`saved`) and is kept until then
(core.service_rules.expired). Each user's sessions are saved one after another, in a
thread of that user's: a folder slow to read (or a reader its user stopped) holds up
no one else's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from nai_server.app import service_checks as checks
from nai_server.app.accounts import Caller
from nai_server.app.processing import inputs
from nai_server.app.registry import Registry
from nai_server.app.services import Services
from nai_server.config import ServerConfig
from nai_server.core import service_rules as rules
from nai_server.core.processing import (
    ANNOTATOR_KIND,
    FINISH_PATH,
    HEALTH_PATH,
    annotator_env,
    is_session,
    session_lineage,
    unsaved,
)
from nai_server.core.states import SERVICE_TERMINAL, ServiceState
from nai_server.core.trees import Limits, TreeError
from nai_server.core.units import parse_size
from nai_server.host import outputs, unix, user_folders
from nai_server.host.collection import run_as
from nai_server.host.replica_http import Answer
from nai_server.plugins import PluginRegistry
from nai_server.plugins.contracts import USER_HEADER, Kind
from nai_server.protocol import ApiError, Conflict, Forbidden, Invalid, NotFound
from nai_server.protocol.processing import DatasetAnnotate
from nai_server.protocol.services import ServiceInfo
from nai_server.store.blobs import BlobStore

log = logging.getLogger("nai.annotate")
Doc = dict[str, Any]
Headers = list[tuple[bytes, bytes]]
Forward = Callable[[str, str, Headers, bytes], Awaitable[Answer]]
RUNNER = "nai_server.plugins.annotator_replica"
LABELS = "labels"  # the session's output folder, in its own directory
_USER = USER_HEADER.encode()
_READS = ("GET", "HEAD", "OPTIONS")
RETRY_SECONDS = 60.0  # a save that failed unexpectedly is tried again after this


class AnnotatorSessions:
    """Starting, admitting to, finishing and saving annotate sessions."""

    def __init__(self, config: ServerConfig, services: Services, registry: Registry,
                 plugins: PluginRegistry, blobs: BlobStore,
                 caller_for: Callable[[str], Caller]) -> None:
        self.config, self.services, self.registry = config, services, registry
        self.plugins, self.blobs, self.caller_for = plugins, blobs, caller_for
        self.root = config.state / "annotations"
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700 if config.personal else 0o711)
        jobs = config.jobs
        self.limits = Limits(max_file_size=parse_size(jobs.max_output_file_size),
                             max_entries=jobs.max_output_entries,
                             max_total_size=parse_size(jobs.max_output_size))
        self.timeout = jobs.collect_timeout_seconds
        self._saving: dict[str, str] = {}  # session → its user, while it is saved
        self._savers: list[threading.Thread] = []
        self._closing = False
        self._retry_at: dict[str, float] = {}  # session → when a failed save is tried again
        self._guard = threading.Lock()
        self._helpers: set[outputs.Helper] = set()  # readers and removers, killed at close
        services.life.settle = self.settle
        registry.refuse_annotated = self._refuse_annotated

    def close(self) -> None:
        with self._guard:
            self._closing = True
        while alive := [t for t in self._savers if t.is_alive()]:
            for helper in list(self._helpers):  # a user's helper never holds it up
                outputs.kill(helper)
            alive[0].join(0.1)

    # --- starting ---------------------------------------------------------------------

    def start(self, caller: Caller, name: str, body: DatasetAnnotate) -> ServiceInfo:
        """The session serving `body.plugin` over `name@body.version`, as the caller."""
        if caller.uid == 0 and not self.config.personal:
            raise Forbidden("an annotator is a plugin's code over people's data: it runs as "
                            "the user who starts it, never as root; start the session as "
                            "your own user")
        version, options, source, target = inputs(
            self.plugins, self.registry, caller, name, body, Kind.ANNOTATOR, "annotator")
        try:
            asked = rules.parse_serve({k: v for k in ("memory", "cpus")
                                       if (v := getattr(body, k)) is not None})
        except rules.ServeError as exc:
            raise Invalid(str(exc).replace("serve.", "", 1)) from exc
        ram, cpus = checks.limits(self.config.jobs, asked)
        services, records = self.services, self.services.records
        now = services.clock()
        number = None  # its folder, once made: removed if the start is not committed
        try:
            with services.lock:
                checks.check_group(services.store, caller, body.group)
                service = body.name or self._free_name(f"annotate-{source.name}"[:58])
                if checks.check_name_free(records.get(service), service):
                    services.book.forget(service)
                checks.check_room(self.config.services, services.life.docs(), caller.user)
                services._check_quota(caller.user, body.group, body.gpus, 1)
                fresh = records.next_number()
                while os.path.lexists(self.root / str(fresh)):  # left by a crash
                    fresh = records.next_number()
                folder = self._folder(fresh, caller.user)
                number = fresh
                doc: Doc = {
                    "name": service, "number": number, "kind": ANNOTATOR_KIND,
                    "owner": {"group": body.group} if body.group else {"user": caller.user},
                    "user": caller.user, "model": source.ref, "tree_id": source.tree_id,
                    # -P: the dataset's files (the replica's working directory) are data,
                    # never modules this Python imports (a `pluggy.py` in a shared dataset).
                    "command": f"exec {shlex.quote(sys.executable)} -P -m {RUNNER}",
                    "health": HEALTH_PATH, "gpus": body.gpus, "gpu_memory": None,
                    "memory": ram, "cpus": cpus, "replicas": 1, "visibility": body.visibility,
                    "public": False, "idle_timeout": None, "max_batch": None,
                    "max_wait_ms": None, "created_at": now, "updated_at": now,
                    "state": str(ServiceState.PENDING), "message": None, "runs": 0,
                    "failures": [], "replica_docs": [], "tokens": [], "idle": False,
                    "env": annotator_env(body.plugin, version, options, str(folder),
                                         body.options),
                    "annotation": {"plugin": body.plugin, "version": version,
                                   "options": options, "to": target, "dir": str(folder),
                                   "labelled_by": [], "done": False, "saved": None},
                }
                records.put(doc)
        except BaseException:
            if number is not None:  # (rmdir alone: no helper of the user's in a request)
                self._remove(body.name or "(refused)", caller.user, number, empty=False)
            raise
        services.life.wake()
        log.info("%s started annotate session %s: %s over %s, labels to %s", caller.user,
                 service, body.plugin, source.ref, target)
        return services.show(caller, service)

    def _free_name(self, base: str) -> str:
        """`base`, or `base-2`, `base-3`...: the first no live session holds."""
        for n in range(1, 1000):
            name = base if n == 1 else f"{base}-{n}"
            old = self.services.records.get(name)
            if old is None or (old["state"] in SERVICE_TERMINAL and not old["replica_docs"]
                               and not unsaved(old)):
                return name
        raise Conflict(f"too many services named {base}-N; give one with --name")

    def _folder(self, number: int, user: str) -> Path:
        """The session's labels folder, new and empty: `user`'s, in a directory of the
        daemon's."""
        top = self.root / str(number)
        top.mkdir(mode=0o700)
        folder = top / LABELS
        folder.mkdir(mode=0o700)
        if not self.config.personal and os.geteuid() == 0:
            account = unix.unix_account(user)
            if account is None:
                folder.rmdir()  # (still the daemon's: never given to anyone)
                top.rmdir()
                raise Invalid(f"user {user} has no unix account on this host")
            os.chown(folder, account.pw_uid, account.pw_gid)
        os.chmod(top, 0o700 if self.config.personal else 0o711)
        return folder

    def _refuse_annotated(self, caller: Caller, dataset: str, numbers: list[int]) -> None:
        """Conflict while a session shows one of these versions of `dataset` (its
        replica's files are that version's) or has not saved its labels yet (their
        lineage names it); naming only the sessions the caller may see. Under the lock
        (the registry's removal)."""
        refs = {f"{dataset}@{n}" for n in numbers}
        live = [d for d in self.services.life.docs() if is_session(d) and d["model"] in refs
                and (d["state"] not in SERVICE_TERMINAL or unsaved(d))]
        if not live:
            return
        shown = [d["name"] for d in live if self.services._may_read(caller, d)]
        named = ", ".join(shown) if shown else "a session you cannot see"
        raise Conflict(f"dataset {dataset} is being labelled in {named}; stop it first "
                       f"(`nai service stop NAME`) and try again once its labels are saved")

    # --- reaching it ------------------------------------------------------------------

    def admit(self, caller: Caller | None, name: str, doc: Doc, wait: float) -> Forward:
        """How `caller` (already allowed to see the service) talks to session `name`:
        only one who may also read its dataset, never without a user (the gateway).
        Called in a worker thread (the registry takes the lock)."""
        if caller is None:
            raise NotFound(f"no service named {name!r} on the gateway: an annotate session "
                           f"is opened through `nai service forward {name}`")
        dataset = doc["model"].partition("@")[0]
        try:
            self.registry.show(caller, "dataset", dataset)
        except (NotFound, Forbidden):
            raise Forbidden(f"session {name!r} labels dataset {doc['model']}, which you may "
                            f"not read; its owner can share it with you") from None
        seen = set(doc["annotation"].get("labelled_by") or [])
        user = caller.user.encode()

        async def forward(method: str, target: str, headers: Headers, body: bytes) -> Answer:
            if target.split("?", 1)[0] == FINISH_PATH:
                if method != "POST":
                    return _answer(405, {"error": f"POST {FINISH_PATH} saves and ends the "
                                                  f"session"})
                info = await asyncio.to_thread(self.services.stop, caller, name)
                return _answer(200, {"finishing": True, "state": info.state,
                                     "labels_to": info.labels_to})
            if method not in _READS and caller.user not in seen:
                await asyncio.to_thread(self._labelled, name, caller.user)
                seen.add(caller.user)
            sent = [(k, v) for k, v in headers if k.lower() != _USER]
            sent.append((_USER, user))
            return await self.services.invoke(name, wait, method, target, sent, body)
        return forward

    def _labelled(self, name: str, user: str) -> None:
        """`user` sent the session a change: named in its labels' lineage."""
        with self.services.lock:
            doc = self.services.records.get(name)
            if doc is None or not unsaved(doc):
                return
            people = doc["annotation"].setdefault("labelled_by", [])
            if user not in people:
                people.append(user)
                self.services.records.put(doc)

    # --- saving -----------------------------------------------------------------------

    def settle(self, docs: list[Doc]) -> None:
        """From the supervisor's step: save the sessions that ended (stopped, failed)
        and whose replica is gone, beside it: one at a time per user, each user's in a
        thread of its own, so that what a user's folder costs to read (or their
        stopping its reader, a process of theirs) holds up their sessions alone."""
        for doc in docs:
            name, user = doc["name"], doc["user"]
            if not (unsaved(doc) and doc["state"] in SERVICE_TERMINAL
                    and not doc["replica_docs"]):
                continue
            with self._guard:  # (closing: saved at the next start)
                if (self._closing or name in self._saving or user in self._saving.values()
                        or self._retry_at.get(name, 0.0) > time.monotonic()):
                    continue
                self._saving[name] = user
                self._savers = [t for t in self._savers if t.is_alive()]
                saver = threading.Thread(target=self._save, args=(name, doc["number"]),
                                         name=f"nai-labels-{name}", daemon=True)
                self._savers.append(saver)
                saver.start()  # (under the guard: `close` sees it alive)

    def _save(self, name: str, number: int) -> None:
        self._retry_at.pop(name, None)
        try:
            with self.services.lock:
                doc = self.services.records.get(name)
            if doc is None or doc["number"] != number or not unsaved(doc):
                return
            saved, problem = self._register(doc)
            with self.services.lock:
                doc = self.services.records.get(name)
                if doc is None or doc["number"] != number:
                    return
                doc["annotation"].update(done=True, saved=saved, problem=problem)
                said = (f"labels saved as {saved}" if saved else
                        f"labels not saved ({problem}); they stay in "
                        f"{doc['annotation']['dir']}" if problem else
                        "nothing was labelled: no version saved")
                doc["message"] = "; ".join(m for m in (doc.get("message"), said) if m)
                doc["updated_at"] = self.services.clock()
                self.services.records.put(doc)
            if not problem:
                self._remove(name, doc["user"], number)
            log.info("annotate session %s: %s", name, said)
        except Exception:
            # Not at every step (each try reads the whole folder again): in a while.
            self._retry_at[name] = time.monotonic() + RETRY_SECONDS
            log.exception("annotate session %s: saving its labels failed; trying again in "
                          "%g s", name, RETRY_SECONDS)
        finally:
            with self._guard:
                self._saving.pop(name, None)

    def _register(self, doc: Doc) -> tuple[str | None, str | None]:
        """The session's folder, read as its user, as the next version of its target:
        (the version, None), (None, why not), or (None, None) when it holds nothing new
        (empty, or the source's files alone)."""
        note = doc["annotation"]
        user = doc["user"]
        try:
            tree = outputs.collect(self.blobs, Path(note["dir"]), self.limits,
                                   run_as(user, self.config.personal), self.timeout,
                                   self._helpers)
            if tree == doc["tree_id"] or not self.blobs.get_tree(tree):
                return None, None  # nothing labelled: no version
            version = self.registry.register_output(
                self.caller_for(user), note["to"], tree, group=doc["owner"].get("group"),
                description=f"labels of annotate session {doc['name']} ({note['plugin']} "
                            f"over {doc['model']})",
                metadata={"lineage": session_lineage(doc)}, kind="dataset")
        except (TreeError, unix.NoAccount) as exc:
            return None, str(exc)
        except ApiError as exc:
            return None, exc.message
        return f"{note['to']}@{version.version}", None

    def _remove(self, name: str, user: str, number: int, empty: bool = True) -> None:
        """The session's folder, gone: emptied as its user (what is in it is theirs to
        arrange: links, FIFOs, mounts), then removed by the daemon, which never walks
        it; what its user could not remove stays, with the folder."""
        top = self.root / str(number)
        folder = top / LABELS
        try:
            if os.path.lexists(folder):
                if empty:
                    user_folders.empty(folder, run_as(user, self.config.personal),
                                       self.timeout, self._helpers)
                os.rmdir(folder)  # (`top` is the daemon's: `labels` is what it made)
            os.rmdir(top)
        except (OSError, unix.NoAccount) as exc:
            log.warning("annotate session %s: its folder %s stays: %s", name, folder, exc)


def _answer(status: int, body: object) -> Answer:
    data = json.dumps(body).encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield data
    return Answer(status, [(b"content-type", b"application/json")], chunks(), len(data))
