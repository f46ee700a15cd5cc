from __future__ import annotations

import pytest

from nai_server.core.states import (
    ACTIVE,
    ALLOWED,
    TERMINAL,
    InvalidTransition,
    JobState,
    transition,
)


def test_every_state_has_a_row_in_the_table() -> None:
    assert set(ALLOWED) == set(JobState)


def test_happy_path() -> None:
    state = JobState.QUEUED
    for target in (JobState.STARTING, JobState.RUNNING, JobState.SUCCEEDED):
        state = transition(state, target)
    assert state is JobState.SUCCEEDED


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (JobState.QUEUED, JobState.CANCELLED),
        (JobState.STARTING, JobState.LOST),
        (JobState.STARTING, JobState.FAILED),
        (JobState.RUNNING, JobState.TIMED_OUT),
        (JobState.RUNNING, JobState.PREEMPTED),
        (JobState.PREEMPTED, JobState.QUEUED),
        (JobState.PREEMPTED, JobState.CANCELLED),
    ],
)
def test_allowed_moves(current: JobState, target: JobState) -> None:
    assert transition(current, target) is target


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (JobState.QUEUED, JobState.RUNNING),
        (JobState.QUEUED, JobState.SUCCEEDED),
        (JobState.RUNNING, JobState.QUEUED),
        (JobState.SUCCEEDED, JobState.RUNNING),
        (JobState.CANCELLED, JobState.QUEUED),
        (JobState.PREEMPTED, JobState.RUNNING),
    ],
)
def test_forbidden_moves_raise_naming_both_states(current: JobState, target: JobState) -> None:
    with pytest.raises(InvalidTransition) as info:
        transition(current, target)
    assert current.value in str(info.value)
    assert target.value in str(info.value)
    assert (info.value.current, info.value.target) == (current, target)


def test_terminal_states_lead_nowhere() -> None:
    assert set(TERMINAL) == {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMED_OUT,
        JobState.LOST,
    }
    for state in TERMINAL:
        for target in JobState:
            with pytest.raises(InvalidTransition):
                transition(state, target)


def test_active_states() -> None:
    assert set(ACTIVE) == {JobState.STARTING, JobState.RUNNING}
    assert not ACTIVE & TERMINAL


def test_states_are_strings_for_json() -> None:
    assert JobState("timed_out") is JobState.TIMED_OUT
    assert f"{JobState.RUNNING}" == "running"
