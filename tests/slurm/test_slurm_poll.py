"""The daemon's poll on a cluster that runs other people's jobs too: squeue is asked
for this daemon's jobs by id (and by name after a crash mid-submit), and answers only
those, however long the queue (22.05's `squeue --json` ignores these filters)."""

from __future__ import annotations

import time

from nai_server.config import SlurmConfig
from nai_server.host.launchers.slurm import SlurmClient
from nai_server.host.launchers.slurm_text import SlurmJob, parse_scontrol_exit, parse_squeue_text
from nai_server.testing import wait_for
from nai_server.testing.slurm_cluster import SlurmCluster


def _sbatch(cluster: SlurmCluster, name: str, command: str) -> int:
    done = cluster.run("sbatch", "--parsable", f"--job-name={name}", "--output=/dev/null",
                       "--chdir=/tmp", "--wrap", command)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().split(";")[0])


def test_squeue_answers_for_the_jobs_asked_only(cluster: SlurmCluster) -> None:
    client = SlurmClient(SlurmConfig(conf=cluster.conf, accounting="jobcomp"))
    foreign = _sbatch(cluster, "someone-elses", "sleep 300")
    mine = _sbatch(cluster, "nai-k-1-0", "sleep 300")
    quick = _sbatch(cluster, "nai-k-2-0", "exit 3")

    def both() -> dict[int, SlurmJob] | None:
        found = client.jobs([mine, quick, 99999])
        return found if quick in found and found[quick].phase == "ended" else None

    seen = wait_for(both, what="both jobs in squeue, the quick one ended")
    assert foreign not in seen
    assert seen[mine].name == "" and seen[mine].uid == 0  # names are never read back
    assert seen[mine].phase in ("pending", "running")
    assert seen[quick].exit_code is None  # squeue's text has none: sacct's is asked
    assert wait_for(lambda: client.ended([quick]).get(quick), what="sacct").exit_code == 3
    assert client.ended([quick], since=time.time()).get(quick) is not None  # a bounded search
    assert client.exit_codes([quick, mine, 99999]) == {quick: 3}  # slurmctld's, while it has it

    by_name = client.jobs([], ["nai-k-1-0", "nai-k-9-0"])
    assert set(by_name) == {mine} and by_name[mine].name == "nai-k-1-0"  # the name asked
    assert client.jobs([99998, 99999]) == {}  # none known: squeue calls it an error
    assert client.jobs() == {}  # nothing asked, nothing run


def test_squeue_text_is_read_defensively() -> None:
    text = ("12|RUNNING|None|1000|2026-12-07T05:12:17|NONE|n[1-2]\n"
            "13|PENDING|Resources|1001|N/A|N/A|\n"
            "14_3|RUNNING|None|1002|N/A|N/A|n1\n"  # someone's array task: never nai's
            "\n")
    assert parse_scontrol_exit("JobId=5 JobState=FAILED ExitCode=0:9 Name=x", 5) == 137
    assert parse_scontrol_exit("JobId=5 JobState=RUNNING ExitCode=0:0", 5) is None
    jobs = parse_squeue_text(text, epoch=lambda v: 5.0 if v[0].isdigit() else None)
    assert set(jobs) == {12, 13}
    assert (jobs[12].state, jobs[12].uid, jobs[12].nodes, jobs[12].start, jobs[12].end) == (
        "RUNNING", 1000, "n[1-2]", 5.0, None)
    assert (jobs[13].name, jobs[13].reason, jobs[13].start) == ("", "Resources", None)
