"""Small hand-made machines and queues for the policy tests (test_backfill.py,
test_starvation.py, test_fairshare_order.py, test_policy_rules.py, test_preempt.py)."""

from __future__ import annotations

from nai_server.core.sched_types import INF
from nai_server.core.scheduling import (
    Accounting,
    Cluster,
    GpuView,
    Plan,
    QueuedJob,
    RunningJob,
    Tuning,
)

GiB = 1024**3
NOW = 1_000_000.0
HOUR = 3600
DAY = 86_400.0
# No window and no favour for width, length or age: orders and reservations as in
# EASY, so that the tests can work out the expected answer by hand.
PLAIN = Tuning(reserve_window=INF, weight_length=0, weight_width=0, weight_age=0, weight_qos=0)
SHARES = Accounting(usage={"user:bob": 1e6, "user:ada": 1e3})  # bob is over his share


def gpus(n: int) -> tuple[GpuView, ...]:
    return tuple(GpuView(i, f"GPU-{i}", 80 * GiB, 80 * GiB, False) for i in range(n))


def job(
    id: int,
    n: int = 1,
    *,
    limit: int | None = HOUR,
    user: str = "ada",
    group: str | None = None,
    at: float | None = None,
    **kw: object,
) -> QueuedJob:
    return QueuedJob(
        id=id,
        user=user,
        group=group,
        gpus=n,
        gpu_memory=None,
        submitted_at=NOW - 1000 + id if at is None else at,
        time_limit=limit,
        **kw,  # type: ignore[arg-type]
    )


def run(
    id: int,
    on: tuple[int, ...],
    *,
    ends_in: float | None,
    user: str = "bob",
    group: str | None = None,
    **kw: object,
) -> RunningJob:
    """A job on GPUs ``on``, started 10 minutes ago, whose time limit runs out
    ``ends_in`` seconds from NOW (None: it has no time limit)."""
    limit = None if ends_in is None else round(ends_in + 600)
    return RunningJob(id, user, group, on, NOW - 600, limit, **kw)  # type: ignore[arg-type]


def machine(n: int, *running: RunningJob) -> Cluster:
    return Cluster(gpus(n), tuple(running), cpu_slots=2)


def started(result: Plan) -> dict[int, tuple[int, ...]]:
    return {start.job_id: start.gpus for start in result.starts}
