"""Jobs through the real daemon on a real single-node Slurm cluster with 4 fake GPUs,
as real unix users: the integration fixtures, and one cluster for the session (Slurm
takes seconds to start, so the tests share it and clean up their own jobs)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest

from nai_server.testing import slurm_cluster, wait_for
from tests.integration.conftest import (  # noqa: F401 - fixtures, found by name
    Daemon,
    UnixUser,
    daemon_factory,
    make_user,
    traversable,
)


@pytest.fixture(scope="session")
def cluster() -> Iterator[slurm_cluster.SlurmCluster]:
    """munged, slurmctld and slurmd on this host, one node with 4 GPUs; skipped where
    Slurm is not installed."""
    yield from _cluster(nodes=1, gpus=4)


@pytest.fixture(scope="session")
def two_nodes() -> Iterator[slurm_cluster.SlurmCluster]:
    """A second cluster: two nodes (two slurmd on this host) with one GPU each."""
    yield from _cluster(nodes=2, gpus=1)


def _cluster(nodes: int, gpus: int) -> Iterator[slurm_cluster.SlurmCluster]:
    why = slurm_cluster.missing()
    if why is not None:
        pytest.skip(why)
    running = slurm_cluster.start(gpus=gpus, nodes=nodes)
    try:
        yield running
    finally:
        running.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(running.root)


@pytest.fixture(autouse=True)
def no_jobs_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test on a shared cluster, none of its Slurm jobs outlives it: jobs
    outlive the daemon that submitted them (by design), and one left holding GPUs made
    the next test wait for GPUs that never came free."""
    yield
    for name in ("cluster", "two_nodes"):
        if name not in request.fixturenames:
            continue
        running: slurm_cluster.SlurmCluster = request.getfixturevalue(name)
        listed = running.run("squeue", "-h", "-o", "%i")
        ids = listed.stdout.split()
        if ids:
            running.run("scancel", "--full", *ids)
            wait_for(lambda r=running: not r.run("squeue", "-h", "-o", "%i").stdout.split(),
                     timeout=60, what="the test's Slurm jobs to end")
