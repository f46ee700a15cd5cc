"""Read rights on trees and blobs (DESIGN §6): a tree id or a digest is a name, not a
capability.

A caller may read, or reference (as a job's code, a registry version, a blob of a
new tree), a tree only if it is reachable from something they may read:

- a tree they recorded themselves (POST /v1/trees),
- the code or output tree of a job they may read (`Jobs.may_read`),
- a dataset or model version they may read (the version's own tree, not what its
  metadata names),
- a tree whose every blob they uploaded themselves.

Admins read everything. A blob counts as the caller's when they uploaded its bytes
(the store's claims). Unknown and unreadable trees get the same answer.
"""

from __future__ import annotations

from collections.abc import Callable

from nai_server.app.accounts import Caller
from nai_server.core import registry_rules as rules
from nai_server.core.job import Job, JobSummary
from nai_server.core.trees import is_digest
from nai_server.store.atomic import CommitLock
from nai_server.store.blobs import BlobStore, StoreCorrupt, TreeNotFound
from nai_server.store.db import TinyDbStore


class TreeAccess:
    """Decides who may read which tree; reads the hot jobs and the registry under the
    service lock, the archived jobs from memory without it."""

    def __init__(self, store: TinyDbStore, lock: CommitLock, blobs: BlobStore,
                 may_read_job: Callable[[Caller, Job | JobSummary], bool]) -> None:
        self.store = store
        self.lock = lock
        self.blobs = blobs
        self.may_read_job = may_read_job

    def may_read(self, caller: Caller, tree_id: str) -> bool:
        """True if `caller` may read the recorded tree `tree_id`; False for anything
        else (unknown, unreadable, not a digest). Cheapest rules first; whether the
        tree exists is asked last, so that the time an answer takes does not tell an
        unreadable tree from an unknown one (only the last rule reads the tree)."""
        if not is_digest(tree_id):
            return False
        if (caller.admin or self.blobs.claims.has_tree(caller.user, tree_id)
                or self.via_registry(caller, tree_id) or self.via_jobs(caller, tree_id)):
            return self.blobs.has_tree(tree_id)
        return self._uploaded_all(caller, tree_id)

    def via_registry(self, caller: Caller, tree_id: str) -> bool:
        """Through a dataset or model version of that tree the caller may read
        (`rules.reads_tree`): asks the store's index for the entries holding the tree,
        so the time under the lock does not grow with the registry."""
        with self.lock:
            holders = self.store.registry_holders(tree_id)
        return any(rules.may_read(caller, doc) for doc in holders)

    def via_jobs(self, caller: Caller, tree_id: str) -> bool:
        """Through a job that ran on or left `tree_id`: the hot jobs are read under the
        lock, the archived ones from the store's index of trees, without it (a job
        archived in between was among the hot ones)."""
        with self.lock:
            hot = [job for job in self.store.hot() if tree_id in _trees(job)]
        using: list[Job | JobSummary] = [*hot, *(
            job for job in self.store.archived_using(tree_id) if tree_id in _trees(job))]
        return any(self.may_read_job(caller, job) for job in using)

    def _uploaded_all(self, caller: Caller, tree_id: str) -> bool:
        try:
            entries = self.blobs.get_tree(tree_id)
        except (TreeNotFound, StoreCorrupt, ValueError):
            return False
        digests = {e.sha256 for e in entries if e.kind == "file"}
        # A tree without files has no blob to prove anything by. Asked last: still
        # recorded (not only parsed before), and refreshed for gc (store/gc.py).
        return (bool(digests) and not self.blobs.missing_for(caller.user, digests)
                and self.blobs.has_tree(tree_id))

    def readable_blobs(self, caller: Caller, wanted: set[str]) -> set[str]:
        """Which of `wanted` are files of some tree `caller` may read through the
        registry or a job (tree claims need no look: their blobs were checked when the
        tree was recorded, and are claimed or in such a tree). Costly: for the few
        digests a caller references without having uploaded them."""
        found: set[str] = set()
        for tree_id in self._reachable_trees(caller):
            if found >= wanted:
                break
            try:
                entries = self.blobs.get_tree(tree_id)
            except (TreeNotFound, StoreCorrupt, ValueError):
                continue
            found |= {e.sha256 for e in entries if e.kind == "file"} & wanted
        return found & wanted

    def _reachable_trees(self, caller: Caller) -> list[str]:
        with self.lock:
            trees = [v["tree_id"] for kind in rules.KINDS
                     for doc in self.store.stored_registry_entries(kind)
                     if rules.may_read(caller, doc) for v in doc["versions"]]
            hot = self.store.hot()
        trees += [tree for job in self.store.job_summaries(hot)
                  if self.may_read_job(caller, job) for tree in _trees(job) if tree]
        return list(dict.fromkeys(trees))


def _trees(job: Job | JobSummary) -> tuple[str | None, str | None]:
    """The trees a job ran on or left: its code and outputs (not its dataset or
    model, which the registry's rules cover)."""
    return job.code_tree, job.output_tree
