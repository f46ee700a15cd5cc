"""The pure part of `nai-admin store verify`: what a damaged blob or tree breaks.

The walk over the store (nai_server.store.verify) finds blobs that are missing or do
not hash to their name, and trees whose file no longer matches its id; this module
says which files of which trees they are, and which jobs and registry versions use
those trees, and paces the re-hashing. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nai_server.core.trees import Entry

Doc = dict[str, Any]

MISSING = "missing"
CORRUPT = "corrupt"
# A tree that lost blobs: its file is fine, files in it are not.
INCOMPLETE = "incomplete"

# How a job uses a tree, by the key of its document that names the tree.
JOB_ROLES = (("code_tree", "code"), ("output_tree", "outputs"))
PINNED_ROLES = ("dataset", "model")

SHOWN_PATHS = 100  # paths listed per damaged tree; the count says how many in all
LISTED = 10_000  # entries listed per kind of damage; beyond, only counted


def throttle_delay(done: int, elapsed: float, rate: float) -> float:
    """Seconds to wait so that `done` bytes read over `elapsed` seconds stay within
    `rate` bytes per second (0 or less: no limit)."""
    if rate <= 0:
        return 0.0
    return max(0.0, done / rate - elapsed)


def damaged_files(entries: Iterable[Entry], bad: Mapping[str, str],
                  have: Callable[[str], bool]) -> list[tuple[str, str, str]]:
    """(path, digest, problem) of each file of a tree whose blob is damaged: known bad
    (`bad`: digest → problem, from the walk) or not there (`have` is false). Each blob
    is asked about once."""
    problems: dict[str, str | None] = {}
    found: list[tuple[str, str, str]] = []
    for e in entries:
        if e.kind != "file":
            continue
        digest = e.sha256
        if digest not in problems:
            problems[digest] = bad.get(digest) or (None if have(digest) else MISSING)
        problem = problems[digest]
        if problem is not None:
            found.append((e.path, digest, problem))
    return found


def job_trees(job: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(role, tree id) of every tree a job uses: its code, its outputs and the dataset
    and model versions it pinned."""
    used = [(role, job[key]) for key, role in JOB_ROLES if job.get(key)]
    for role in PINNED_ROLES:
        pin = job.get(role)
        if isinstance(pin, Mapping) and pin.get("tree_id"):
            used.append((role, pin["tree_id"]))
    return used


def version_trees(kind: str, entry: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(version, tree id) of every version of a registry entry, marked ones included."""
    return [(v["version"], v["tree_id"]) for v in entry.get("versions", ())
            if v.get("tree_id")]


def broken_jobs(broken: Mapping[str, str], jobs: Iterable[Mapping[str, Any]]) -> list[Doc]:
    """The jobs that use a broken tree (tree id → problem), newest first as given:
    id, user, state and the roles of the broken trees it uses."""
    found: list[Doc] = []
    for job in jobs:
        uses = [{"role": role, "tree_id": tree, "problem": broken[tree]}
                for role, tree in job_trees(job) if tree in broken]
        if uses:
            found.append({"id": job["id"], "user": job.get("user", ""),
                          "state": job.get("state", ""), "trees": uses})
    return found


def broken_versions(broken: Mapping[str, str],
                    entries: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Doc]:
    """The dataset and model versions whose tree is broken, with their owner."""
    found: list[Doc] = []
    for kind, entry in entries:
        owner = entry.get("owner") or {}
        for version, tree in version_trees(kind, entry):
            if tree in broken:
                found.append({"kind": kind, "name": entry["name"], "version": version,
                              "tree_id": tree, "problem": broken[tree],
                              "owner": next(iter(owner.values()), "")})
    return found


def referenced_trees(jobs: Iterable[Mapping[str, Any]],
                     entries: Iterable[tuple[str, Mapping[str, Any]]]) -> set[str]:
    """Every tree id a job or a registry version names."""
    found = {tree for job in jobs for _, tree in job_trees(job)}
    found |= {tree for kind, entry in entries for _, tree in version_trees(kind, entry)}
    return found


def is_clean(report: Mapping[str, Any]) -> bool:
    """True if a finished report found nothing damaged."""
    return not any(report.get(key) for key in ("blobs", "trees", "stray", "unlisted"))
