"""What the store keeps in memory of an archived job (a fact) is, as a summary, what
the job's own record summarises to: questions over every job get the same answer for
a job whether it is hot or archived."""

from __future__ import annotations

from typing import Any

import pytest

from nai_server.core.job import Job
from nai_server.store.history import JobFacts, summary_of

T = 1.7e9
CODE, OUT, DATA, MODEL = "a" * 64, "b" * 64, "c" * 64, "d" * 64
JOBS: list[dict[str, Any]] = [
    {"user": "alice", "group": "team", "state": "succeeded", "spec": {"gpus": 2},
     "code_tree": CODE, "output_tree": OUT, "submitted_at": T, "started_at": T + 10,
     "ended_at": T + 70, "gpus": [0, 1], "runs": [[T + 1, T + 5, 2]],
     "dataset": {"name": "d", "version": 1, "tree_id": DATA},
     "model": {"name": "m", "version": 3, "tree_id": MODEL}},
    {"user": "bob", "group": None, "state": "failed", "spec": {}, "submitted_at": T,
     "started_at": T, "ended_at": T + 1, "gpus": [3]},
    {"user": "carol", "state": "cancelled", "code_tree": CODE, "submitted_at": T},
]


@pytest.mark.parametrize("doc", JOBS)
def test_an_archived_jobs_summary_is_its_records(doc: dict[str, Any]) -> None:
    facts = JobFacts()
    facts.add([(7, doc)])
    [fact] = facts.of([7])
    assert summary_of(fact) == Job.from_doc({**doc, "id": 7}).summary()


def test_a_summary_names_the_trees_a_job_uses() -> None:
    summary = Job.from_doc({**JOBS[0], "id": 1}).summary()
    assert summary.trees() == [("code", CODE), ("outputs", OUT), ("dataset", DATA),
                               ("model", MODEL)]
    assert not summary.active and summary.runs[0].gpus == 2


def test_the_archived_trees_are_those_the_summaries_name_and_follow_a_rearchive() -> None:
    """What gc marks of the archive (`trees`) is what the jobs' summaries name; a job
    archived again (after a crash) with a copy that names no tree takes its own along,
    and a tree another archived job uses stays."""
    facts = JobFacts()
    facts.add(enumerate(JOBS, 1))
    assert facts.trees() == {tree for f in facts.all() for _, tree in summary_of(f).trees()}
    assert facts.trees() == {CODE, OUT, DATA, MODEL}
    bare = {k: v for k, v in JOBS[0].items()
            if k not in ("code_tree", "output_tree", "dataset", "model")}
    facts.add([(1, bare)])
    assert facts.trees() == {CODE}  # job 3's code
