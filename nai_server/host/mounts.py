"""What a job gets from the registries and gives back to them.

A job's dataset and base model appear read-only in its directory: hard links to the
read-only blobs (nothing is copied), in directories owned by the daemon with mode
0555, so the job can neither change the files nor add or remove entries. When a job
that asked for `register_model` succeeds, its outputs become a model version whose
metadata says where they came from.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nai_server.core.bounds import json_problem, json_row
from nai_server.core.job import Job
from nai_server.core.metric_summary import Summary, check_metric_choice, headline
from nai_server.core.processing import PROCESS, processor_lineage
from nai_server.host import jobfiles, user_folders
from nai_server.store.blobs import BlobStore

Doc = dict[str, Any]
MOUNTS = ("dataset", "model")  # job field → directory under the job's directory
READ_ONLY_DIR = 0o555
SUMMARY_SCAN = 32 << 20  # bytes of metrics.jsonl read for a summary (its end)
MAX_SUMMARY_LINE = 1 << 16  # longer lines are skipped


def mount(blobs: BlobStore, tree_id: str, dest: Path) -> None:
    """Materialise `tree_id` at `dest` as links to the blobs, every directory 0555."""
    blobs.materialise(tree_id, dest, link=True)
    for dirpath, dirnames, _ in os.walk(dest, topdown=False):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, READ_ONLY_DIR)
    os.chmod(dest, READ_ONLY_DIR)


def unmount(dest: Path) -> bool:
    """Remove a mount left by an earlier run (the blobs its links point to stay),
    through descriptors (user_folders.remove): no link is followed, nothing but a
    directory opened. A folder at its name that is not the daemon's (its user's, who
    may fill it with anything) is left as it is, and False: the caller moves it away,
    to be emptied as its owner."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return True
    if stat.S_ISDIR(st.st_mode) and st.st_uid != os.geteuid():
        return False
    return user_folders.remove(dest, 0.0)  # the daemon's own: no helper is started


def pinned(job: Job, kind: str) -> str | None:
    """`name@version` of the job's dataset or model, if it has one."""
    pin = job.pin(kind)
    return f"{pin.name}@{pin.version}" if pin else None


def last_metrics(job_dir: Path, limit: int = 1 << 16) -> dict[str, Any]:
    """The last complete JSON object line of the job's metrics.jsonl ({} if none) that
    a version's metadata can keep: the file is the job's to write, and one line the
    state file cannot hold (json_problem) would otherwise fail the registration."""
    try:
        with jobfiles.open_regular(job_dir, "metrics.jsonl") as fd:
            if fd is None:
                return {}
            size = os.fstat(fd).st_size
            tail = os.pread(fd, limit, max(0, size - limit))
    except OSError:
        return {}
    for line in reversed(tail.splitlines()):
        row = json_row(line)
        if row is not None and json_problem(row) is None:
            return row
    return {}


def metric_summary(job_dir: Path, directions: Mapping[str, str] | None = None,
                   limit: int = SUMMARY_SCAN) -> Doc:
    """Best and last of each metric in the job's metrics.jsonl (its last `limit` bytes:
    the file is the job's to write; `partial` says when earlier lines were not read).
    Lines too long or not JSON objects are skipped."""
    summary = Summary(directions)
    partial = False
    try:
        with jobfiles.open_regular(job_dir, "metrics.jsonl") as fd:
            if fd is not None:
                size = os.fstat(fd).st_size
                start = max(0, size - limit)
                partial = start > 0
                _scan(fd, start, size, summary)
    except (OSError, jobfiles.UnsafeJobFile):
        return {"metrics": {}, "partial": False}
    return {"metrics": summary.result(), "partial": partial}


def _scan(fd: int, start: int, size: int, summary: Summary) -> None:
    """Feed the complete lines of bytes start..size; a first line cut by `start` and
    lines over MAX_SUMMARY_LINE are skipped unread."""
    pending = bytearray()
    skip = start > 0  # the first line began before `start`
    overlong = False
    pos = start
    while pos < size:
        chunk = os.pread(fd, min(1 << 20, size - pos), pos)
        if not chunk:
            break
        pos += len(chunk)
        begin = 0
        while (nl := chunk.find(b"\n", begin)) >= 0:
            if not (skip or overlong):
                _feed(summary, bytes(pending) + chunk[begin:nl])
            skip = overlong = False
            pending.clear()
            begin = nl + 1
        if not (skip or overlong):
            pending += chunk[begin:]
            if len(pending) > MAX_SUMMARY_LINE:
                pending.clear()
                overlong = True
    if pending and not (skip or overlong):  # a last line without its newline
        _feed(summary, bytes(pending))


def _feed(summary: Summary, line: bytes) -> None:
    if not line.strip() or len(line) > MAX_SUMMARY_LINE:
        return
    row = json_row(line)
    if row is not None:
        summary.feed(row)


def lineage_of(job_id: int, code_tree: str | None, pins: Mapping[str, str | None]) -> Doc:
    """Where a model version made of a job's outputs came from."""
    lineage: Doc = {"job": job_id, "code_tree": code_tree}
    for kind in MOUNTS:
        ref = pins.get(kind)
        lineage[f"{kind}s"] = [ref] if ref else []
    return lineage


def output_metadata(job: Job, job_dir: Path, chosen: Mapping[str, Any] | None) -> Doc:
    """Metadata of the version (model or dataset) a job's outputs become: the last
    metrics row, the summary of every metric (best and last), the `chosen` metric
    ({name, direction}; the spec's `register_metric` at a job's end, the caller's for
    `nai model register`) with its best and last, and lineage."""
    directions = check_metric_choice(chosen["name"], chosen["direction"]) if chosen else {}
    summary = metric_summary(job_dir, directions)
    metadata: Doc = {"metrics": last_metrics(job_dir), "summary": summary["metrics"]}
    if summary["partial"]:
        metadata["summary_partial"] = True
    if chosen:
        metadata["metric"] = headline(summary["metrics"], chosen["name"]) or {
            "name": chosen["name"], "direction": directions[chosen["name"]]}
    metadata["lineage"] = lineage_of(job.id, job.code_tree,
                                     {kind: pinned(job, kind) for kind in MOUNTS})
    # Named only for the jobs the server's own requests made: any spec may set the
    # variables they are read from.
    processor = processor_lineage(job.spec.env) if job.made_by == PROCESS else None
    if processor is not None:
        metadata["lineage"]["processor"] = processor
    return metadata

