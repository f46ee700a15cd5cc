"""Jobs through the real daemon on a real single-node Slurm cluster with 4 fake GPUs,
as real unix users: the integration fixtures, and one cluster for the session (Slurm
takes seconds to start, so the tests share it and clean up their own jobs)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest

from nai_server.testing import slurm_cluster
from tests.integration.conftest import (  # noqa: F401 - fixtures, found by name
    Daemon,
    UnixUser,
    daemon_factory,
    make_user,
    traversable,
)


@pytest.fixture(scope="session")
def cluster() -> Iterator[slurm_cluster.SlurmCluster]:
    """munged, slurmctld and slurmd on this host; skipped where Slurm is not installed."""
    why = slurm_cluster.missing()
    if why is not None:
        pytest.skip(why)
    running = slurm_cluster.start(gpus=4)
    try:
        yield running
    finally:
        running.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(running.root)
