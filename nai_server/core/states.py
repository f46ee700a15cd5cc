"""Job states and the one table of allowed transitions between them."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    PREEMPTED = "preempted"


_Q, _S, _R = JobState.QUEUED, JobState.STARTING, JobState.RUNNING

ALLOWED: dict[JobState, frozenset[JobState]] = {
    # queued → cancelled also covers "a dependency failed", decided by the service.
    JobState.QUEUED: frozenset({_S, JobState.CANCELLED}),
    # starting → lost: the daemon restarted before the process was seen running;
    # starting → queued: it died before the job's wrapper even started (nothing ran).
    JobState.STARTING: frozenset({_Q, _R, JobState.FAILED, JobState.CANCELLED, JobState.LOST}),
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMED_OUT,
            JobState.LOST,
            JobState.PREEMPTED,
        }
    ),
    # A preempted job goes back to the queue rather than finishing.
    JobState.PREEMPTED: frozenset({_Q, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.TIMED_OUT: frozenset(),
    JobState.LOST: frozenset(),
}

TERMINAL: frozenset[JobState] = frozenset(s for s, nxt in ALLOWED.items() if not nxt)
"""States a job never leaves."""

ACTIVE: frozenset[JobState] = frozenset({_S, _R})
"""States in which a job holds resources (GPUs or a CPU slot)."""


class InvalidTransition(Exception):
    """A job was asked to move to a state the table does not allow from its current one."""

    def __init__(self, current: JobState, target: JobState) -> None:
        self.current = current
        self.target = target
        allowed = ", ".join(sorted(ALLOWED[current])) or "none, it is final"
        super().__init__(
            f"a job cannot go from {current.value!r} to {target.value!r} "
            f"(allowed from {current.value!r}: {allowed})"
        )


def transition(current: JobState, target: JobState) -> JobState:
    """Return ``target`` if a job in ``current`` may move there, else raise InvalidTransition."""
    if target not in ALLOWED[current]:
        raise InvalidTransition(current, target)
    return target


class ServiceState(StrEnum):
    """Where a service (or one of its replicas) is in its life."""

    PENDING = "pending"  # waiting for GPUs, or scaled to zero until a request comes
    STARTING = "starting"  # the replica runs; its health check has not passed yet
    READY = "ready"
    UNHEALTHY = "unhealthy"  # it was ready; its health check now fails
    STOPPED = "stopped"
    FAILED = "failed"  # restarted too often in the window: the message says why


SERVICE_ALLOWED: dict[ServiceState, frozenset[ServiceState]] = {
    ServiceState.PENDING: frozenset({ServiceState.STARTING, ServiceState.STOPPED,
                                     ServiceState.FAILED}),
    # starting → pending: the replica died before it was ready and waits to restart.
    ServiceState.STARTING: frozenset({ServiceState.READY, ServiceState.PENDING,
                                      ServiceState.STOPPED, ServiceState.FAILED}),
    ServiceState.READY: frozenset({ServiceState.UNHEALTHY, ServiceState.PENDING,
                                   ServiceState.STOPPED, ServiceState.FAILED}),
    ServiceState.UNHEALTHY: frozenset({ServiceState.READY, ServiceState.PENDING,
                                       ServiceState.STOPPED, ServiceState.FAILED}),
    ServiceState.STOPPED: frozenset(),
    ServiceState.FAILED: frozenset(),
}

SERVICE_TERMINAL: frozenset[ServiceState] = frozenset(
    s for s, nxt in SERVICE_ALLOWED.items() if not nxt)
"""States a service never leaves (a stopped service is started again as a new one)."""
