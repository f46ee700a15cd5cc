"""Why a job waits beside a free GPU, in words: what the plan keeps it for."""

from __future__ import annotations

from nai_server.core.scheduling import WaitReason, plan
from nai_server.core.wait_words import kept_for
from tests.unit.policy_kit import HOUR, NOW, job, machine, run


def test_a_free_gpu_kept_for_the_head_names_it_and_what_it_waits_for() -> None:
    cluster = machine(2, run(5, (0,), ends_in=900))
    queue = [job(7, 2), job(9, 1, limit=2 * HOUR)]
    result = plan(queue, cluster, NOW, policy="backfill")
    assert result.waiting == {7: WaitReason.RESOURCES, 9: WaitReason.PRIORITY}
    assert result.head == 7
    assert kept_for(queue[0], cluster, result.starts, NOW) == (
        "GPU 1 is kept for job 7 (2 GPUs), which starts when job 5 ends")


def test_several_gpus_and_several_jobs_to_end() -> None:
    cluster = machine(6, run(5, (0,), ends_in=900), run(6, (1,), ends_in=600),
                      run(8, (2,), ends_in=5 * HOUR), run(4, (3,), ends_in=HOUR))
    head = job(7, 4)
    result = plan([head, job(9, 1, limit=3 * HOUR)], cluster, NOW, policy="backfill")
    assert result.head == 7 and result.waiting[9] is WaitReason.PRIORITY
    assert kept_for(head, cluster, result.starts, NOW) == (
        "GPUs 4, 5 are kept for job 7 (4 GPUs), which starts when jobs 5 and 6 end")


def test_a_job_without_a_limit_to_wait_for_is_said_so() -> None:
    cluster = machine(2, run(5, (0,), ends_in=None))
    head = job(7, 2)
    assert kept_for(head, cluster, (), NOW) == (
        "GPU 1 is kept for job 7 (2 GPUs), which starts when job 5 ends "
        "(no time limit: nobody knows when)")


def test_nothing_free_nothing_said() -> None:
    cluster = machine(2, run(5, (0,), ends_in=900), run(6, (1,), ends_in=900))
    assert kept_for(job(7, 2), cluster, (), NOW) is None
    assert plan([job(7, 1)], machine(1), NOW, policy="fifo").head is None
