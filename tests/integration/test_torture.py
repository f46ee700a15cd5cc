"""The torture test (issue 14): the real daemon SIGKILLed 20 times at aimed moments of a
60-job workload with outputs (uploads, submits, dataset pushes, job directory copies,
output collection, job ends, archive moves, random delays); afterwards every confirmed
job is there once, ran once, ended with its true exit code and byte-identical outputs,
nothing of it runs, no temp file from before the last start is left, and the store
verifies clean. The engine is `nai_server.testing.torture`; `bench/torture.py` runs it
longer. NAI_TORTURE_SEED=N replays a failure's workload and kill plan."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from conftest import needs_root  # type: ignore[import-not-found]

from nai_server.testing import torture

pytestmark = [needs_root]


def test_sigkill_at_random_points_loses_doubles_and_leaks_nothing() -> None:
    seed = os.environ.get("NAI_TORTURE_SEED")
    root = Path(tempfile.mkdtemp(prefix="nai-torture-"))
    try:
        report = torture.run(root, jobs=60, kills=20, seed=int(seed) if seed else None,
                             say=print)
        print(report.summary())
        assert not report.failures, (
            f"{report.summary()}\nreplay with NAI_TORTURE_SEED={report.seed}:\n"
            + "\n".join(report.failures) + "\n--- daemon log (end) ---\n"
            + (root / "daemon.log").read_text(errors="replace")[-6000:])
        assert sum(report.kills.values()) + sum(report.missed.values()) == 20
    finally:
        shutil.rmtree(root, ignore_errors=True)
