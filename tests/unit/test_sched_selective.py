"""Selective reservations: a first waiting job keeps GPUs idle for itself only once it
has waited long for its size, or when they come free soon for its size."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nai_server.core.scheduling import WaitReason, plan
from tests.unit.policy_kit import DAY, HOUR, NOW, PLAIN, job, machine, run, started

SELECTIVE = replace(PLAIN, reserve_slowdown=4.0, reserve_near=1.0, reserve_after=2 * DAY)


def _queue(head_limit: int, waited: float, behind: int | None = 3 * 86_400) -> list:
    """A two-GPU head that has waited ``waited`` seconds, then a long one-GPU job."""
    return [
        job(1, 2, limit=head_limit, at=NOW - waited),
        job(2, 1, limit=behind, at=NOW - waited + 1),
    ]


@pytest.mark.parametrize(
    ("head_limit", "waited", "reserved"),
    [
        (10 * HOUR, 1 * HOUR, False),  # slowdown 1.1: too early for a 10-hour job
        (10 * HOUR, 29 * HOUR, False),  # 3.9
        (10 * HOUR, 31 * HOUR, True),  # 4.1: it has waited long for its size
        (HOUR, 2 * HOUR, False),  # 3: a one-hour job waits a little first too
        (HOUR, 3 * HOUR + 60, True),  # past 4 within hours: short jobs get theirs soon
        (60, 2 * HOUR, False),  # a limit under an hour counts as an hour
        (60, 3 * HOUR + 60, True),
    ],
)
def test_a_far_reservation_is_kept_once_the_job_has_slowed_down_enough(
    head_limit: int, waited: float, reserved: bool
) -> None:
    # GPU 0 comes free in 20 hours: further off than either head's own length.
    cluster = machine(2, run(7, (0,), ends_in=20 * HOUR))
    result = plan(_queue(head_limit, waited), cluster, NOW, policy="fairshare", tuning=SELECTIVE)
    if reserved:
        assert started(result) == {}
        assert result.est_start == {1: NOW + 20 * HOUR}
        assert result.waiting == {1: WaitReason.RESOURCES, 2: WaitReason.PRIORITY}
    else:
        # No reservation: the idle GPU goes to the job behind, however long it runs.
        assert started(result) == {2: (1,)}
        assert result.est_start == {}


def test_a_reservation_within_the_jobs_own_length_is_kept_at_once() -> None:
    # GPU 0 comes free in 5 hours; the head runs 10: holding GPU 1 costs at most half
    # of what the head itself takes, so it gets its reservation without waiting first.
    cluster = machine(2, run(7, (0,), ends_in=5 * HOUR))
    result = plan(_queue(10 * HOUR, 60), cluster, NOW, policy="fairshare", tuning=SELECTIVE)
    assert started(result) == {}
    assert result.est_start == {1: NOW + 5 * HOUR}
    # Twice as far, it would not be near any more.
    cluster = machine(2, run(7, (0,), ends_in=11 * HOUR))
    result = plan(_queue(10 * HOUR, 60), cluster, NOW, policy="fairshare", tuning=SELECTIVE)
    assert started(result) == {2: (1,)}


def test_a_job_that_has_waited_reserve_after_keeps_its_reservation() -> None:
    # A 40-day job after two days has slowed down only 1.05 times, but it is starving;
    # the job behind it, without a time limit, may not run into its reservation.
    cluster = machine(2, run(7, (0,), ends_in=50 * DAY))
    result = plan(_queue(40 * 86_400, 2 * DAY, behind=None), cluster, NOW,
                  policy="fairshare", tuning=SELECTIVE)  # fmt: skip
    assert started(result) == {}
    assert result.est_start == {1: NOW + 50 * DAY}


def test_off_every_first_waiting_job_keeps_its_reservation() -> None:
    cluster = machine(2, run(7, (0,), ends_in=20 * HOUR))
    off = replace(SELECTIVE, reserve_slowdown=0.0)
    result = plan(_queue(10 * HOUR, HOUR), cluster, NOW, policy="fairshare", tuning=off)
    assert started(result) == {}
    assert result.est_start == {1: NOW + 20 * HOUR}
