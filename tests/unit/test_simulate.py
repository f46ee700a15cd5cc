"""The trace replay, on traces small enough to work out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nai_server.cli import main as nai_server
from nai_server.cli.simulate import TraceJob, _Machine, metrics, read_trace, replay
from nai_server.core.scheduling import QueuedJob, RunningJob, Tuning

TRACE = """\
job_id,user,submit_time,duration,num_gpus,status,time_limit
j1,a,0,100,1,Pass,100
j2,a,0,100,2,Pass,100
j3,b,0,50,1,Pass,50
j4,b,0,200,1,Pass,200
"""
# Two GPUs, everything submitted at 0; j2 needs both.
# fifo:     j1 0-100; j2 waits for it, 100-200; j3 200-250 and j4 200-400 wait behind j2.
# firstfit: j1 0-100 and j3 0-50; j4 takes j3's GPU at 50 (50-250); j2 only at 250-350.
# backfill: j2 reserves both GPUs for 100; j3 ends by then (0-50) and backfills, j4 does
#           not (it would end at 250); j2 100-200, then j4 200-400.
EXPECTED = {
    "fifo": {"j1": (0, 100), "j2": (100, 200), "j3": (200, 250), "j4": (200, 400)},
    "firstfit": {"j1": (0, 100), "j2": (250, 350), "j3": (0, 50), "j4": (50, 250)},
    "backfill": {"j1": (0, 100), "j2": (100, 200), "j3": (0, 50), "j4": (200, 400)},
}


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    path.write_text(TRACE)
    return path


@pytest.mark.parametrize("policy", sorted(EXPECTED))
def test_each_job_runs_when_worked_out_by_hand(trace: Path, policy: str) -> None:
    result = replay(read_trace(trace), 2, policy)
    ends = {d.job.name: (d.end - d.job.work, d.end) for d in result.done}
    assert ends == EXPECTED[policy]


@pytest.mark.parametrize(
    ("policy", "figures"),
    [
        # avg JCT, median JCT, avg wait, bounded slowdown, worst user's, util, makespan,
        # wait of the widest job (j2)
        ("fifo", (237.5, 225.0, 125.0, 2.5, 3.5, 550 / 800, 400.0, 100.0)),
        ("firstfit", (187.5, 175.0, 75.0, 1.6875, 2.25, 550 / 700, 350.0, 250.0)),
        ("backfill", (187.5, 150.0, 75.0, 1.5, 1.5, 550 / 800, 400.0, 100.0)),
    ],
)
def test_metrics_worked_out_by_hand(trace: Path, policy: str, figures: tuple[float, ...]) -> None:
    m = metrics(replay(read_trace(trace), 2, policy))
    keys = ("avg_jct", "median_jct", "avg_wait", "bsld", "worst_user_bsld", "utilisation",
            "makespan", "widest_p99_wait")  # fmt: skip
    assert tuple(m[key] for key in keys) == pytest.approx(figures)
    assert m["p95_jct"] == max(end for _, end in EXPECTED[policy].values())
    assert m["preemptions"] == 0


def test_a_job_is_killed_at_its_time_limit() -> None:
    jobs = [
        TraceJob(1, "long", "a", 0.0, 5000.0, 1, 3600),
        TraceJob(2, "next", "a", 0.0, 10, 1, 60),
    ]
    done = {d.job.name: d for d in replay(jobs, 1, "fifo").done}
    assert done["long"].end == 3600
    assert done["next"].end == 3610


def test_preempted_job_keeps_its_service_and_runs_only_the_rest() -> None:
    jobs = [
        TraceJob(1, "long", "a", 0.0, 10_000.0, 1, 20_000),
        TraceJob(2, "short", "b", 1000.0, 100.0, 1, 3600),
    ]
    result = replay(jobs, 1, "fairshare+preempt")
    done = {d.job.name: d for d in result.done}
    # At 1000 s a has used the GPU alone (over their share) and b has not: b's job
    # preempts a's, runs 100 s, and a's resumes with 9,000 s left.
    assert done["short"].jct == 100
    assert done["long"].end == 10_100
    assert done["long"].preemptions == 1
    assert metrics(result)["preemptions"] == 1
    assert done["long"].estimated is None  # it started at once, never dated


def test_a_preempted_jobs_later_estimates_are_not_taken_for_its_first_start() -> None:
    jobs = [
        TraceJob(1, "long", "a", 0.0, 10_000.0, 1, 20_000),
        TraceJob(2, "short", "b", 1000.0, 100.0, 1, 3600),
        TraceJob(3, "later", "a", 1050.0, 10.0, 1, 30_000),
    ]
    done = {d.job.name: d for d in replay(jobs, 1, "fairshare+preempt").done}
    # At 1050 s the preempted long job is requeued, first in line, and dated: that is
    # no estimate of its first start (at 0), which est_start's error is measured on.
    assert done["long"].preemptions >= 1 and done["long"].started == 0
    assert done["long"].estimated is None
    assert done["later"].estimated is not None
    # Without preemption the short job waits for the long one.
    assert {d.job.name: d.end for d in replay(jobs, 1, "fairshare").done}["short"] == 10_100


def test_unknown_policy_and_too_wide_jobs_are_refused() -> None:
    jobs = [TraceJob(1, "wide", "a", 0.0, 10.0, 4, 60)]
    with pytest.raises(ValueError, match="more than 2 GPUs"):
        replay(jobs, 2, "fifo")
    with pytest.raises(ValueError, match="unknown scheduling policy"):
        replay(jobs, 4, "lottery")
    with pytest.raises(ValueError, match="known: preempt"):
        replay(jobs, 4, "fifo+magic")


def test_cli_prints_a_table_with_ratios_to_fifo(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert nai_server(["simulate", "--trace", str(trace), "--gpus", "2",
                       "--policy", "backfill", "--policy", "firstfit"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "tiny.csv: 4 jobs on 2 GPUs"
    assert [line.split()[0] for line in lines[2:5]] == ["fifo", "backfill", "firstfit"]
    assert "ratio to fifo" in out
    assert lines[-1].split()[:2] == ["firstfit", "0.789"]  # 187.5 h / 237.5 h


def test_cli_json(trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nai_server(["simulate", "--trace", str(trace), "--gpus", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["policy"] for row in rows] == ["fifo", "fairshare"]
    assert rows[0]["avg_jct"] == 237.5


def test_cli_says_what_is_wrong_with_the_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.csv"
    assert nai_server(["simulate", "--trace", str(missing), "--gpus", "2"]) == 2
    assert "nope.csv" in capsys.readouterr().err


def test_estimated_starts_are_checked_against_actual_starts(trace: Path) -> None:
    # Under backfill j2 is the head at 0, told it starts at 100 when j1's limit runs out,
    # and so is j4 at 100, told 200: both start then. Under fifo the job holding back
    # the rest is told too: j2 at 0 (100), then j3 at 100 (200, when j2's limit ends).
    backfill = metrics(replay(read_trace(trace), 2, "backfill"))
    assert (backfill["est_error_median"], backfill["est_share"]) == (0.0, 0.5)
    fifo = replay(read_trace(trace), 2, "fifo")
    told = {d.job.name: d.estimated for d in fifo.done if d.estimated is not None}
    assert told == {"j2": 100.0, "j3": 200.0}
    assert metrics(fifo)["est_error_median"] == 0.0
    late = [TraceJob(1, "a", "a", 0.0, 50.0, 1, 100), TraceJob(2, "b", "a", 0.0, 10.0, 1, 100)]
    # On one GPU b is told 100 (a's limit) but starts at 50, after a wait of 50: error 1.
    assert metrics(replay(late, 1, "backfill"))["est_error_median"] == 1.0


def test_a_wake_at_a_tiers_edge_is_after_now() -> None:
    """Seven GPUs held for 3600/7 s make one hour of service, which rounds to just under
    it: the next wake must still be later than now, or the replay never moves on (it
    did, on four of the family traces with every job preemptible)."""
    machine = _Machine(8, True, Tuning())
    machine.now = 597_519.0 + 3600 / 7
    machine.running[1] = RunningJob(
        1, "ada", None, tuple(range(7)), 597_519.0, 86_400, preemptible=True
    )
    machine.queue[2] = QueuedJob(
        2, "bob", None, 3, None, 0.0, 3600, preemptible=True, attained=100.0
    )
    wake = machine.next_wake()
    assert wake is not None and wake > machine.now
