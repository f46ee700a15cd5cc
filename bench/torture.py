"""The torture test (issue 14), longer: SIGKILL the real daemon `--kills` times at
random points of a `--jobs`-job workload with outputs, then check that every
confirmed job is there once with its true exit code and byte-identical outputs, that
no job process and no stale temp file is left, and that `nai-admin store verify` is
clean. Prints where the kills landed and what was found; exits 1 on any failure.

    sudo .venv/bin/python bench/torture.py [--jobs 200] [--kills 100] [--seed N] [--keep]

A failure names the seed: `--seed N` replays the same workload and kill plan.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from nai_server.testing import torture


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the state dir and log")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nai-torture-"))
    try:
        report = torture.run(root, jobs=args.jobs, kills=args.kills, seed=args.seed,
                             say=lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(report.summary())
    for failure in report.failures:
        print(f"FAIL {failure}")
    if args.keep:
        print(f"state and daemon log kept in {root}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
