"""A job's code snapshot: hard links to the blobs vs a full copy (nai_server.host.code_snapshot).

Builds a code tree of FILES files (most small, a few large, as a project with a
checkpoint in its folder) in a temporary blob store, then times writing it out as a
job's code/ both ways, the way the daemon does (owner given to a job user), and
prints the time and the disk each takes. Run as root (links are for jobs run as
another user):

    .venv/bin/python bench/code_snapshot.py [--files 5000] [--big-mib 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nai_server.core.trees import Entry
from nai_server.host.code_snapshot import snapshot
from nai_server.store.blobs import BlobStore

JOB_UID = JOB_GID = 65534  # nobody: a job user that is not the store's owner


def make_tree(blobs: BlobStore, files: int, big_mib: int) -> str:
    entries = []
    for i in range(files):
        data = f"# module {i}\n".encode() + os.urandom(2048)
        digest = blobs.put_bytes(data)
        entries.append(Entry(f"pkg{i // 100}/mod{i}.py", "file", len(data), 0o644, digest))
    if big_mib:
        data = os.urandom(big_mib << 20)
        entries.append(Entry("checkpoints/model.pt", "file", len(data), 0o644,
                             blobs.put_bytes(data)))
    return blobs.put_tree(entries)


def disk_used(root: Path) -> int:
    """Bytes of blocks allocated under `root` that no earlier inode counted."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen and st.st_nlink == 1:
                total += st.st_blocks * 512
            seen.add((st.st_dev, st.st_ino))
    return total


def time_one(blobs: BlobStore, tree: str, dest: Path, *, writable: bool) -> tuple[float, int]:
    os.sync()
    start = time.perf_counter()
    snapshot(blobs, tree, dest, JOB_UID, JOB_GID, writable=writable)
    elapsed = time.perf_counter() - start
    used = disk_used(dest)
    shutil.rmtree(dest)
    return elapsed, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--big-mib", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: only jobs run as another user than the store's get links")
    with tempfile.TemporaryDirectory(prefix="nai-bench-snap-") as tmp:
        blobs = BlobStore(Path(tmp) / "blobs")
        tree = make_tree(blobs, args.files, args.big_mib)
        results = {}
        for writable in (True, False):
            runs = [time_one(blobs, tree, Path(tmp) / "code", writable=writable)
                    for _ in range(args.rounds)]
            results[writable] = (statistics.median(t for t, _ in runs), runs[0][1])
        (copy_s, copy_b), (link_s, link_b) = results[True], results[False]
        print(f"tree: {args.files} files + {args.big_mib} MiB checkpoint, "
              f"median of {args.rounds}")
        print(f"copy  (code: writable): {copy_s * 1000:8.1f} ms  {copy_b / 2**20:8.1f} MiB new")
        print(f"links (default)       : {link_s * 1000:8.1f} ms  {link_b / 2**20:8.1f} MiB new")
        print(f"copy / links: {copy_s / link_s:.1f}x the time")


if __name__ == "__main__":
    main()
