"""Run-time predictions learned from finished jobs, and fair share's use of them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from nai_server.cli.simulate import read_trace, replay
from nai_server.core import predict
from nai_server.core.predict import Finished, estimate, expected_end, learn, runtimes
from nai_server.core.scheduling import Accounting, Tuning, WaitReason, plan
from tests.unit.policy_kit import HOUR, NOW, PLAIN, job, machine, run, started


def test_a_job_with_a_limit_is_predicted_from_the_share_of_it_its_user_used() -> None:
    history = learn({}, [Finished("ada", 600, 3600), Finished("ada", 1800, 3600)])
    # ada's jobs used 1/6 and 1/2 of their limits: a 4-hour job is expected to run 4/3 h.
    assert estimate(runtimes(history), "ada", 4 * HOUR) == pytest.approx(4 * HOUR / 3)


def test_only_the_last_jobs_count() -> None:
    old = [Finished("ada", 3600, 3600)] * 10
    recent = [Finished("ada", 360, 3600)] * predict.KEEP_RATIOS
    assert estimate(runtimes(learn({}, old + recent)), "ada", HOUR) == pytest.approx(360)


def test_without_a_limit_the_mean_of_the_last_two_run_times() -> None:
    history = learn({}, [Finished("ada", 100), Finished("ada", 200), Finished("ada", 400)])
    assert estimate(runtimes(history), "ada", None) == pytest.approx(300)


def test_nothing_known_falls_back_on_the_limit_and_never_exceeds_it() -> None:
    history = learn({}, [Finished("ada", 10_000, 3600)])
    predicted = runtimes(history)
    assert estimate(predicted, "bob", 2 * HOUR) == 2 * HOUR
    assert estimate(predicted, "bob", None) is None
    assert estimate(predicted, "ada", HOUR) == HOUR  # ran to its limit: share 1


def test_a_job_name_predicts_before_its_user() -> None:
    history = learn(
        {}, [Finished("ada", 360, 3600, name="eval"), Finished("ada", 3600, 3600, name="train")]
    )
    predicted = runtimes(history)
    assert estimate(predicted, "ada", HOUR, name="eval") == pytest.approx(360)
    assert estimate(predicted, "ada", HOUR) == pytest.approx((360 + 3600) / 2)


def test_the_state_is_a_pure_function_of_the_finished_jobs() -> None:
    jobs = [Finished(user, 100.0 * i, 3600) for i, user in enumerate("abcabcab", start=1)]
    at_once = learn({}, jobs)
    one_by_one: predict.History = {}
    for finished in jobs:
        one_by_one = learn(one_by_one, [finished])
    assert one_by_one == at_once


def test_a_job_past_its_prediction_is_expected_to_run_twice_as_long_up_to_its_limit() -> None:
    assert expected_end(0.0, 100.0, 1000, now=50.0) == 100.0
    assert expected_end(0.0, 100.0, 1000, now=150.0) == 200.0
    assert expected_end(0.0, 100.0, 1000, now=700.0) == 800.0
    assert expected_end(0.0, 100.0, 1000, now=900.0) == 1000.0
    assert expected_end(0.0, None, 1000, now=900.0) == 1000.0


# --- fair share on predictions ---------------------------------------------------------

PREDICTING = replace(PLAIN, predict=True)
# ada's jobs use a tenth of their limits; bob's all of it.
PREDICTED = Accounting(
    runtimes=runtimes(learn({}, [Finished("ada", 360, 3600), Finished("bob", 3600, 3600)]))
)


def test_shortest_predicted_first_among_equal_limits() -> None:
    queue = [job(1, user="bob", limit=4 * HOUR), job(2, user="ada", limit=4 * HOUR)]
    tuning = Tuning(weight_fairshare=0, weight_age=0, predict=True)
    result = plan(queue, machine(1), NOW, policy="fairshare", accounting=PREDICTED, tuning=tuning)
    assert started(result) == {2: (0,)}
    off = Tuning(weight_fairshare=0, weight_age=0, predict=False)
    result = plan(queue, machine(1), NOW, policy="fairshare", accounting=PREDICTED, tuning=off)
    assert started(result) == {1: (0,)}


def test_backfill_window_on_predictions_admits_a_job_its_limit_would_not() -> None:
    # The head needs both GPUs; GPU 0 comes back in 2 h. ada's 4-hour job is expected
    # to take 24 min: it backfills under fair share, not under plain backfill.
    cluster = machine(2, run(7, (0,), ends_in=2 * HOUR, user="carl"))
    queue = [job(1, 2, user="bob"), job(2, 1, user="ada", limit=4 * HOUR)]
    result = plan(queue, cluster, NOW, policy="fairshare", accounting=PREDICTED, tuning=PREDICTING)
    assert started(result) == {2: (1,)}
    result = plan(queue, cluster, NOW, policy="backfill", accounting=PREDICTED)
    assert result.waiting[2] is WaitReason.PRIORITY


def test_a_reservation_counts_on_running_jobs_ending_when_predicted() -> None:
    cluster = machine(2, run(7, (0,), ends_in=10 * HOUR, user="ada"))
    result = plan([job(1, 2, user="bob")], cluster, NOW, policy="fairshare",
                  accounting=PREDICTED, tuning=PREDICTING)  # fmt: skip
    # Started 10 min ago with a limit of 10 h 10 min: a tenth of that is 61 min.
    assert result.est_start[1] == pytest.approx(NOW - 600 + (10 * HOUR + 600) / 10)


# --- reservations keep the widest jobs from starving ------------------------------------

STREAM = "job_id,user,submit_time,duration,num_gpus,status,time_limit\n" + "".join(
    f"s{i},u{i % 3},{i * 900},3600,1,Pass,7200\n" for i in range(200)
)  # one-GPU jobs, an hour each, one every 15 minutes, on two GPUs: always a queue


def test_a_whole_server_job_does_not_wait_for_the_stream_of_narrow_jobs_to_end(
    tmp_path: Path,
) -> None:
    path = tmp_path / "stream.csv"
    path.write_text(STREAM + "wide,w,3600,3600,2,Pass,7200\n")
    trace = read_trace(path)
    never = Tuning(reserve_window=0, reserve_after=float("inf"), drain_after=float("inf"))
    wait = {}
    for name, tuning in (("default", Tuning()), ("no reservation", never)):
        done = replay(trace, 2, "fairshare", tuning).done
        wait[name] = next(d.wait for d in done if d.job.name == "wide")
    stream_end = 200 * 900
    assert wait["no reservation"] > stream_end / 2  # starved while the stream lasts
    assert wait["default"] < 6 * HOUR
