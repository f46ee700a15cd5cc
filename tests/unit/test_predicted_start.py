"""`est_start` from predicted run times where the scheduler has them (`core.predict`):
the estimate moves, the plan does not."""

from __future__ import annotations

import pytest

from nai_server.core.predict import Finished, learn, runtimes
from nai_server.core.sched_types import QueuedJob
from nai_server.core.scheduling import Accounting, Tuning, plan
from nai_server.core.what_if import estimate_start
from tests.unit.policy_kit import HOUR, NOW, job, machine, run, started

# ada's jobs used a tenth of their limits.
PREDICTED = Accounting(runtimes=runtimes(learn({}, [Finished("ada", 360, 3600)])))


def test_the_heads_estimate_counts_on_predicted_ends_and_the_plan_is_unchanged() -> None:
    cluster = machine(2, run(7, (0,), ends_in=10 * HOUR, user="ada"))
    queue = [job(1, 2, user="bob"), job(2, 1, user="bob", limit=2 * HOUR)]
    on_limits = plan(queue, cluster, NOW, policy="backfill")
    predicted = plan(queue, cluster, NOW, policy="backfill", accounting=PREDICTED)
    assert on_limits.est_start == {1: NOW + 10 * HOUR}
    # Started 10 min ago with a limit of 10 h 10 min: a tenth of that is 61 min.
    assert predicted.est_start[1] == pytest.approx(NOW - 600 + (10 * HOUR + 600) / 10)
    assert (started(predicted), predicted.waiting) == (started(on_limits), on_limits.waiting)
    # Fair share planning on predictions already dates it so.
    tuned = plan(queue, cluster, NOW, policy="fairshare", accounting=PREDICTED,
                 tuning=Tuning(predict=True))
    assert tuned.est_start[1] == pytest.approx(predicted.est_start[1])


def test_fifo_dates_the_job_holding_back_the_rest_and_no_other() -> None:
    cluster = machine(2, run(7, (0,), ends_in=10 * HOUR, user="ada"))
    queue = [job(1, 2, user="bob"), job(2, 1, user="bob")]
    on_limits = plan(queue, cluster, NOW, policy="fifo")
    assert on_limits.est_start == {1: NOW + 10 * HOUR}
    assert started(on_limits) == {}
    predicted = plan(queue, cluster, NOW, policy="fifo", accounting=PREDICTED)
    assert predicted.est_start[1] == pytest.approx(NOW - 600 + (10 * HOUR + 600) / 10)
    assert predicted.waiting == on_limits.waiting


def test_a_job_outliving_its_prediction_is_expected_later_never_past_its_limit() -> None:
    # Started 10 min ago, a limit of 1 h: predicted 6 min, outlived, so 12 min.
    cluster = machine(1, run(7, (0,), ends_in=HOUR - 600, user="ada"))
    predicted = plan([job(1, 1)], cluster, NOW, policy="backfill", accounting=PREDICTED)
    assert predicted.est_start[1] == pytest.approx(NOW - 600 + 2 * 360)


def test_a_dry_run_counts_on_predicted_ends_too() -> None:
    cluster = machine(2, run(7, (0, 1), ends_in=10 * HOUR, user="ada"))
    ahead = [job(3, 2, user="ada", limit=10 * HOUR, at=NOW - 60)]
    mine = QueuedJob(id=9, user="bob", group=None, gpus=2, gpu_memory=None,
                     submitted_at=NOW, time_limit=HOUR)
    on_limits = estimate_start(mine, ahead, cluster, NOW)
    assert on_limits.at == NOW + 10 * HOUR + 10 * HOUR
    found = estimate_start(mine, ahead, cluster, NOW, accounting=PREDICTED)
    first = NOW - 600 + (10 * HOUR + 600) / 10  # job 7's predicted end
    assert found.at == pytest.approx(first + HOUR)  # then job 3's: a tenth of 10 h


def test_the_daemon_learns_from_its_history_then_from_each_job_that_ends() -> None:
    from nai_server.app.run_times import RunTimes
    from nai_server.core.job import Job, JobSummary, Run
    from nai_server.core.spec import spec_from_dict
    from nai_server.core.states import JobState

    class Store:
        def job_summaries(self, hot: list[Job] | None = None) -> object:
            assert hot == []  # the archived jobs only: no time limit kept
            yield JobSummary(id=1, user="ada", state=JobState.SUCCEEDED, started_at=100.0,
                             ended_at=400.0, runs=(Run(0.0, 50.0, 1),))
            yield JobSummary(id=2, user="ada", state=JobState.CANCELLED, started_at=0.0,
                             ended_at=9000.0)

    times = RunTimes(Store())  # type: ignore[arg-type]
    learned = times.with_predictions(Accounting(), [])
    assert learned.runtimes == {"user:ada": 350.0}
    ended = Job(id=3, user="ada", state=JobState.SUCCEEDED, spec=spec_from_dict(
        {"command": "x"}), submitted_at=0.0, time_limit=3600, started_at=1000.0,
        ended_at=1360.0)
    assert times.with_predictions(Accounting(), [ended]).runtimes["ratio:user:ada"] == 0.1
    assert times.with_predictions(Accounting(), [ended]).runtimes["user:ada"] == 355.0
