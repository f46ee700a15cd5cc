"""Collecting ended jobs' outputs in the background, as their owners.

When a job's process has ended, the run loop hands it here with how it ended; a
helper running as the job's owner reads its output/ into the blob store (see
`outputs`) outside the daemon's lock, so no request waits on a job's files. The run
loop asks each tick which collections are done, ends those jobs, and forgets them
only once their ends are committed: a failed commit ends them again next tick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from nai_server.core.job import Job
from nai_server.core.processing import PROCESS
from nai_server.core.trees import Limits, TreeError
from nai_server.host import output_seen, outputs, unix
from nai_server.host.lanes import Lanes
from nai_server.host.output_helpers import ForkServer
from nai_server.store.blobs import BlobStore

log = logging.getLogger("nai.runtime")
# A running job's outputs stored ahead of its end: a pass at most every AHEAD_GAP
# seconds, and the next waits AHEAD_DUTY times the length of the last one's listing
# (passes over many files list them for at most a sixth of the time). The time spent
# storing new files is not counted: it is work the job's end would do otherwise.
AHEAD_GAP = 0.5
AHEAD_DUTY = 5.0


@dataclass(frozen=True)
class Ended:
    """How a job's process ended: when, the launcher's status and exit code, what of it
    was killed at its end (in words), and whether the OOM killer killed any of its
    processes (its main one may still have exited 0)."""

    at: float
    status: str
    code: int | None
    note: str | None
    oom: bool = False


@dataclass(frozen=True)
class Collected:
    """A finished collection: the tree of the job's outputs, or why there is none
    (`problem`; both None when it left no output/)."""

    job_id: int
    ended: Ended
    tree: str | None
    problem: str | None


def run_as(user: str, personal: bool) -> outputs.RunAs:
    """The account a helper reading `user`'s files runs as (the daemon's own when it
    is not root, or in personal mode). NoAccount when the daemon is root, shared, and
    `user` has no account: never the daemon's own then."""
    if personal or os.geteuid() != 0:
        return outputs.RunAs()
    account = unix.unix_account(user)
    if account is None:
        raise unix.NoAccount(user, "nothing of its outputs was read (never as root); "
                                   "they stay in the job's folder")
    return outputs.RunAs(account.pw_uid, account.pw_gid, tuple(unix.unix_groups(user)))


class OutputCollection:
    """The collections under way, by job id."""

    def __init__(self, blobs: BlobStore, job_dir: Callable[[int], Path], limits: Limits,
                 timeout: float, personal: bool, notify: Callable[[], None],
                 lanes: Lanes | None = None,
                 before: Callable[[int], None] = lambda job_id: None) -> None:
        self.blobs = blobs
        self.job_dir = job_dir
        self.limits = limits
        self.timeout = timeout
        self.personal = personal
        self.notify = notify  # wakes the run loop: a collection has finished
        # Each user's collections in threads of their own (a user may stall their
        # readers), two at a time, in the order their jobs ended.
        self.lanes = lanes or Lanes(2, "nai-collect")
        self._under_way: dict[int, tuple[Ended, Future[tuple[str | None, str | None]]]] = {}
        self._helpers: set[outputs.Helper] = set()  # killed at close
        # Forks the readers (no Python started per job); as the daemon only when personal.
        self.forks = ForkServer(as_daemon=personal)
        self.before = before  # what else is read of an ended job first (its metrics)
        # Passes over running jobs' outputs (store_ahead): a thread for each job's, so
        # that a job's end never waits behind another's, nor a user's behind one they
        # stopped; by job id, its passes and what stops them.
        self._ahead_lanes = Lanes(1, "nai-ahead")
        self._ahead: dict[int, tuple[Future[None], threading.Event]] = {}
        # What each job's passes stored: the next pass, and the collection at its end,
        # read only the files that changed since (output_seen.Seen).
        self._seen: dict[int, output_seen.Seen] = {}

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._under_way

    def start(self, job: Job, ended: Ended) -> None:
        last = None
        passes = self._ahead.pop(job.id, None)
        if passes is not None:
            future, stop = passes
            stop.set()
            if not future.cancel():  # its pass under way is stored before the listing
                last = future
        seen = self._seen.pop(job.id, None)
        self._under_way[job.id] = (ended, self.lanes.submit(job.user, self._collect, job,
                                                            seen, last))

    def ahead(self, started: list[Job]) -> None:
        """Start storing what the dataset processors among the `started` jobs write, in
        passes while each runs (see AHEAD_*), in a thread of its own per job: their
        collections at the end then find those files in the store, and read only what
        changed. Only for jobs whose outputs are written once: a training job's would
        be drafts stored for nothing."""
        running = [job for job in started
                   if job.made_by == PROCESS and job.id not in self._under_way]
        live = {job.id for job in running}
        for job_id in [j for j in self._ahead if j not in live]:
            self._ahead.pop(job_id)[1].set()
        for job_id in [j for j in self._seen if j not in live]:
            self._seen.pop(job_id)
        for job in running:
            if job.id not in self._ahead:
                seen = self._seen.setdefault(job.id, output_seen.Seen())
                stop = threading.Event()
                future = self._ahead_lanes.submit(f"{job.user}/{job.id}", self._passes,
                                                  job, seen, stop)
                self._ahead[job.id] = (future, stop)

    def _passes(self, job: Job, seen: output_seen.Seen, stop: threading.Event) -> None:
        """Passes over the job's output/ until `stop` (its end): one, then a pause. At
        their own pace, not the daemon's ticks, a second apart when it is idle."""
        output = self.job_dir(job.id) / "output"
        while not stop.is_set():
            try:
                if os.path.lexists(output):
                    outputs.store_ahead(self.blobs, output, self.limits,
                                        run_as(job.user, self.personal), self.timeout,
                                        self._helpers, self.forks, seen)
            except Exception as exc:  # the collection at its end decides; this only helps
                log.debug("job %s: outputs not stored ahead: %s", job.id, exc)
            stop.wait(max(AHEAD_GAP, AHEAD_DUTY * seen.listing_seconds))

    def done(self) -> Iterator[Collected]:
        """The collections that have finished (kept until `forget`)."""
        for job_id, (ended, future) in list(self._under_way.items()):
            if not future.done():
                continue
            try:
                tree, problem = future.result()
            except Exception as exc:  # a bug in collecting: the job still ends
                log.exception("job %s: collecting outputs failed", job_id)
                tree, problem = None, str(exc)
            yield Collected(job_id, ended, tree, problem)

    def forget(self, job_id: int) -> None:
        """The job's end is committed."""
        self._under_way.pop(job_id, None)

    def close(self) -> None:
        """Stop the collections under way (their jobs are collected again at the next
        start)."""
        for _future, stop in self._ahead.values():
            stop.set()
        for helper in list(self._helpers):
            outputs.kill(helper)
        self._ahead_lanes.shutdown(wait=True, cancel_futures=True)
        self.lanes.shutdown(wait=True, cancel_futures=True)
        self.forks.close()

    def _collect(self, job: Job, seen: output_seen.Seen | None = None,
                 last: Future[None] | None = None) -> tuple[str | None, str | None]:
        """The job's output tree, read by a helper running as its owner: (tree id, None),
        (None, why not), or (None, None) when it left no output/. `seen`: what passes
        while it ran stored (those files are read again only if they changed), once
        the `last` pass, if one is under way, has ended (it is bounded in time)."""
        if last is not None:
            with contextlib.suppress(Exception):
                last.result()
        try:
            self.before(job.id)
        except Exception:  # its metrics are not worth losing the job's outputs for
            log.exception("job %s: reading its last metrics failed", job.id)
        output = self.job_dir(job.id) / "output"
        try:
            os.lstat(output)
        except FileNotFoundError:
            return None, None
        started = time.monotonic()
        try:
            tree = outputs.collect(self.blobs, output, self.limits,
                                   run_as(job.user, self.personal), self.timeout,
                                   self._helpers, self.forks, seen)
        except unix.NoAccount as exc:
            log.warning("job %s: outputs not collected: %s", job.id, exc)
            return None, str(exc)
        except TreeError as exc:
            log.warning("job %s: outputs not collected: %s", job.id, exc)
            return None, str(exc)
        except Exception as exc:  # keep the job's end even if collecting fails
            log.exception("job %s: outputs not collected", job.id)
            return None, str(exc)
        finally:
            self.notify()
        log.info("job %s: outputs collected in %.2f s", job.id, time.monotonic() - started)
        return tree, None
