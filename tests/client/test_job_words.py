"""How `nai jobs` and `nai show` put a job's GPUs and times: a count is never shown as
an index, a queued job says when it should start, one cancelled while queued stops
counting its wait."""

from __future__ import annotations

import time
from typing import Any

from nai_server.protocol import JobInfo
from nai_tui.cli import output

NOW = 1_000_000.0


def job(**fields: Any) -> JobInfo:
    base: dict[str, Any] = {"id": 7, "name": "train", "user": "ana", "group": None,
                            "state": "queued", "spec": {"command": "x", "gpus": 1},
                            "code_tree": None, "submitted_at": NOW - 200}
    return JobInfo.model_validate(base | fields)


def test_gpus_are_a_count_and_then_which() -> None:
    assert output.gpus_cell(job()) == "1"
    assert output.gpus_cell(job(state="running", gpus=[0], started_at=NOW)) == "1 (gpu 0)"
    assert output.gpus_cell(job(state="running", gpus=[2, 3], started_at=NOW,
                                spec={"command": "x", "gpus": 2})) == "2 (gpu 2,3)"
    assert output.gpus_cell(job(spec={"command": "x", "gpus": 0})) == "cpu"
    # Cancelled while queued: what it asked for, not "cpu".
    assert output.gpus_cell(job(state="cancelled", ended_at=NOW)) == "1"


def test_a_queued_job_says_when_it_should_start() -> None:
    assert output.job_runtime(job(est_start=NOW + 300), NOW) == "starts in ~5 min"
    assert output.job_runtime(job(est_start=NOW + 20), NOW) == "starts in <1 min"
    assert output.job_runtime(job(est_start=NOW - 5), NOW) == "starts in <1 min"
    assert output.job_runtime(job(est_start=NOW + 3 * 3600), NOW) == "starts in ~3 h"
    assert output.job_runtime(job(est_start=NOW + 2 * 86400), NOW) == "starts in ~2 d"
    assert output.job_runtime(job(), NOW) == "waited 3m20s"


def test_a_job_cancelled_while_queued_stops_waiting() -> None:
    assert output.job_runtime(job(state="cancelled", ended_at=NOW - 100), NOW) == "-"
    assert output.job_runtime(job(state="succeeded", started_at=NOW - 100,
                                  ended_at=NOW - 40), NOW) == "1m00s"


def test_the_listing_puts_it_together() -> None:
    rows = output.job_rows([job(reason="Resources", est_start=time.time() + 600),
                            job(id=8, state="running", gpus=[0], started_at=NOW - 65)])
    lines = rows.splitlines()
    assert lines[0].split() == ["ID", "NAME", "USER", "STATE", "GPUS", "TIME"]
    assert "queued (Resources)" in lines[1] and "starts in ~10 min" in lines[1]
    assert "1 (gpu 0)" in lines[2]


def test_show_says_why_a_job_waits_beside_a_free_gpu(capsys: Any) -> None:
    import argparse

    from nai_tui.cli.commands import cmd_show

    words = "GPU 1 is kept for job 7 (2 GPUs), which starts when job 5 ends"

    class Client:
        def job(self, job_id: int) -> JobInfo:
            return job(id=job_id, reason="Priority", why=words)

    assert cmd_show(argparse.Namespace(id=9, json=False), Client()) == 0  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert "  state:     queued, waiting: Priority" in lines
    assert f"  why:       {words}" in lines
