"""What a job gets from the registries and gives back to them.

A job's dataset and base model appear read-only in its directory: hard links to the
read-only blobs (nothing is copied), in directories owned by the daemon with mode
0555, so the job can neither change the files nor add or remove entries. When a job
that asked for `register_model` succeeds, its outputs become a model version whose
metadata says where they came from.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from nai_server.core.job import Job
from nai_server.core.processing import processor_lineage
from nai_server.host import jobfiles
from nai_server.store.blobs import BlobStore

Doc = dict[str, Any]
MOUNTS = ("dataset", "model")  # job field → directory under the job's directory
READ_ONLY_DIR = 0o555


def mount(blobs: BlobStore, tree_id: str, dest: Path) -> None:
    """Materialise `tree_id` at `dest` as links to the blobs, every directory 0555."""
    blobs.materialise(tree_id, dest, link=True)
    for dirpath, dirnames, _ in os.walk(dest, topdown=False):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, READ_ONLY_DIR)
    os.chmod(dest, READ_ONLY_DIR)


def unmount(dest: Path) -> None:
    """Remove a mount left by an earlier run (or whatever the job put in its place);
    the blobs its links point to stay."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        dest.unlink()
        return
    if not dest.exists():
        return
    for dirpath, _dirs, _files in os.walk(dest):
        os.chmod(dirpath, 0o700)  # so that the daemon may empty it (links are not walked)
    shutil.rmtree(dest)


def pinned(job: Job, kind: str) -> str | None:
    """`name@version` of the job's dataset or model, if it has one."""
    pin = job.pin(kind)
    return f"{pin.name}@{pin.version}" if pin else None


def last_metrics(job_dir: Path, limit: int = 1 << 16) -> dict[str, Any]:
    """The last complete JSON object line of the job's metrics.jsonl ({} if none)."""
    try:
        with jobfiles.open_regular(job_dir, "metrics.jsonl") as fd:
            if fd is None:
                return {}
            size = os.fstat(fd).st_size
            tail = os.pread(fd, limit, max(0, size - limit))
    except OSError:
        return {}
    for line in reversed(tail.splitlines()):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            return row
    return {}


def output_metadata(job: Job, job_dir: Path) -> Doc:
    """Metadata of the version a job's outputs become: metrics and lineage."""
    lineage: Doc = {"job": job.id, "code_tree": job.code_tree}
    for kind in MOUNTS:
        ref = pinned(job, kind)
        lineage[f"{kind}s"] = [ref] if ref else []
    processor = processor_lineage(job.spec.env)  # a `nai dataset process` job's
    if processor is not None:
        lineage["processor"] = processor
    return {"metrics": last_metrics(job_dir), "lineage": lineage}

