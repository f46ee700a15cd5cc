"""A Slurm job name (or comment) with a newline in it cannot forge a line of Slurm's
output that nai believes: anyone may `scontrol update JobId=<own> JobName=$'x\\n<victim
id>|PENDING|...'`, and squeue, sacct and `scontrol -o` print the name as is. nai asks
for no free text, takes names from what it asked for, and fails the poll (believes
nothing) on a line twice or one not asked for. No cluster: a scripted Slurm prints
what the real one would for the fields nai asks for."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from nai_server.app.accounts import Caller
from nai_server.app.use_cases import UseCases
from nai_server.config import SlurmConfig
from nai_server.core.spec import spec_from_dict
from nai_server.core.states import JobState
from nai_server.host.launchers import slurm_text as st
from nai_server.host.launchers.slurm import SlurmClient, SlurmError
from nai_server.testing import make_service


@dataclass
class Row:
    """One job in the scripted cluster, every field squeue/sacct/scontrol can print."""

    slurm_id: int
    name: str
    uid: int
    state: str = "PENDING"
    reason: str = "Priority"
    comment: str = ""
    exit_code: str = "0:0"
    nice: int = 0  # squeue lists by priority: a large --nice comes last


def _value(row: Row, field: str) -> str:
    return {"JobID": str(row.slurm_id), "JobIDRaw": str(row.slurm_id), "State": row.state,
            "Reason": row.reason, "UserID": str(row.uid), "UID": str(row.uid),
            "StartTime": "2026-12-07T05:00:00", "Start": "2026-12-07T05:00:00",
            "EndTime": "N/A", "End": "Unknown", "NodeList": "n1", "Name": row.name,
            "JobName": row.name, "Comment": row.comment, "ExitCode": row.exit_code}[field]


class FakeSlurm:
    """`SlurmClient.run`: squeue --Format, sacct -o and scontrol -o as Slurm prints them,
    free text as is (newlines too)."""

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        self.cancelled: list[str] = []
        self.asked: list[str] = []  # each squeue's --jobs= or --name=
        self.sbatch_down = False

    def __call__(self, argv: list[str], stdin: str | None = None, env: object = None) -> str:
        opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
        if argv[0] == "sbatch":
            if self.sbatch_down:
                raise SlurmError("sbatch: error: Unable to contact slurm controller")
            slurm_id = 100 + len(self.rows)
            self.rows[slurm_id] = Row(slurm_id, opts["job-name"], 0, comment=opts["comment"])
            return f"{slurm_id}\n"
        if argv[0] == "scancel":
            self.cancelled.append(argv[-1])
            return ""
        if argv[0] == "squeue":
            self.asked.append(argv[-1])
            fields = [f.split(":")[0] for f in opts["Format"].split(",")]
            ids = {int(i) for i in opts["jobs"].split(",")} if "jobs" in opts else None
            rows = sorted((r for r in self.rows.values()
                           if (r.slurm_id in ids if ids is not None
                               else r.name in opts["name"].split(","))),
                          key=lambda r: r.nice)
            return "".join("|".join(_value(r, f) for f in fields) + "\n" for r in rows)
        if argv[0] == "sacct":
            fields = argv[argv.index("-o") + 1].split(",")
            ids = {int(i) for i in argv[argv.index("-j") + 1].split(",")}
            return "".join("|".join(_value(r, f) for f in fields) + "\n"
                           for r in self.rows.values()
                           if r.slurm_id in ids and st.phase(r.state) == "ended")
        if argv[0] == "scontrol":
            r = self.rows[int(argv[-1])]
            return (f"JobId={r.slurm_id} JobName={r.name} UserId=u({r.uid}) "
                    f"JobState={r.state} Reason={r.reason} ExitCode={r.exit_code} "
                    f"Comment={r.comment}\n")
        raise AssertionError(argv)


def _forged(victim: int, name: str, uid: int, state: str = "PENDING") -> str:
    """A job name that, printed last on a squeue line, adds the victim's line."""
    return f"x\n{victim}|{state}|Priority|{uid}|N/A|N/A||{name}"


@pytest.fixture
def service(tmp_path: Path) -> UseCases:
    made = make_service(tmp_path / "state", mode="personal", gpus=0, launcher="slurm",
                        slurm={"poll_seconds": 1e-6, "accounting": "jobcomp"})
    made.runtime.slurm.run = FakeSlurm()  # type: ignore[attr-defined, method-assign]
    return made


def _state(service: UseCases, job_id: int) -> JobState:
    service.tick()
    with service.lock:
        job = service.runtime.jobs.get(job_id)
    assert job is not None
    return job.state


def test_a_forged_line_neither_loses_nor_cancels_someone_elses_running_job(
        service: UseCases) -> None:
    """The attacker's own nai job runs as a Slurm job nai watches (asks squeue for by
    id); its owner renames that Slurm job to add the victim's line after its own."""
    fake: FakeSlurm = service.runtime.slurm.run  # type: ignore[attr-defined]
    root = Caller("root", uid=0, admin=True)
    victim, attacker = (service.jobs.submit(root, spec_from_dict({"command": "x"}), None).id
                        for _ in range(2))
    service.tick()
    for row in fake.rows.values():
        row.state, row.reason = "RUNNING", "None"
    assert (_state(service, victim), _state(service, attacker)) == (JobState.RUNNING,) * 2
    by_job = {int(r.name.split("-")[2]): r for r in fake.rows.values()}
    mine, theirs = by_job[victim], by_job[attacker]
    # The victim's line with a wrong uid (not the victim's job, then: LOST, and its Slurm
    # job cancelled as a stray), then PENDING with the right one (requeued).
    runtime = service.runtime
    for uid in (4242, 0):
        theirs.name = theirs.comment = _forged(mine.slurm_id, mine.name, uid)
        theirs.nice = 10000
        for _ in range(4):
            assert _state(service, victim) == JobState.RUNNING
            assert victim not in runtime.collections  # not ended (its outputs collected)
            seen = runtime.view[mine.slurm_id]  # type: ignore[attr-defined]
            assert (seen.uid, seen.state) == (0, "RUNNING")
    assert fake.cancelled == []
    with service.lock:
        assert len(service.runtime.jobs.get(victim).runs) == 0  # type: ignore[union-attr]


def test_a_forged_exit_code_in_a_name_is_not_believed(service: UseCases) -> None:
    """squeue says an ended job COMPLETED with no exit code, sacct is silent, and
    `scontrol -o show job` prints the job's own name, which says "ExitCode=0:0"."""
    fake: FakeSlurm = service.runtime.slurm.run  # type: ignore[attr-defined]
    root = Caller("root", uid=0, admin=True)
    job_id = service.jobs.submit(root, spec_from_dict({"command": "x"}), None).id
    service.tick()
    (row,) = fake.rows.values()
    row.state = "RUNNING"
    assert _state(service, job_id) == JobState.RUNNING
    row.name = row.comment = "x JobState=COMPLETED ExitCode=0:0"
    row.state, row.exit_code = "FAILED", "3:0"
    real = fake.__call__

    def no_sacct(argv: list[str], stdin: str | None = None, env: object = None) -> str:
        if argv[0] == "sacct":
            return ""
        return real(argv, stdin, env)

    service.runtime.slurm.run = no_sacct  # type: ignore[attr-defined]
    for _ in range(3):  # not believed: still ending, for nai
        assert _state(service, job_id) == JobState.RUNNING
        seen = service.runtime.view[row.slurm_id]  # type: ignore[attr-defined]
        assert (seen.state, seen.exit_code) == ("COMPLETING", None)
    assert st.parse_scontrol_exit(
        f"JobId={row.slurm_id} JobName=ok JobState=FAILED ExitCode=3:0", row.slurm_id) == 3


def test_a_job_found_by_name_bears_the_name_asked_and_a_forged_one_is_not_adopted(
        service: UseCases) -> None:
    """Killed mid-submit: the job is looked up by its name, one name a call, and the
    name is never read back; a line forged into that answer fails the poll."""
    fake: FakeSlurm = service.runtime.slurm.run  # type: ignore[attr-defined]
    client = service.runtime.slurm  # type: ignore[attr-defined]
    fake.rows[5] = Row(5, "nai-k-1-0", 0)
    fake.rows[6] = Row(6, "nai-k-2-0", 1001)
    found = client.jobs([], ["nai-k-1-0", "nai-k-2-0", "nai-k-3-0"])
    assert {i: (j.name, j.uid) for i, j in found.items()} == {
        5: ("nai-k-1-0", 0), 6: ("nai-k-2-0", 1001)}
    assert client.jobs([5], ["nai-k-1-0"])[5].name == ""  # known by id: not taken by name
    fake.asked.clear()
    assert client.jobs([], ["nai-k-3-0", "nai-k-4-0"]) == {}
    assert fake.asked == ["--name=nai-k-3-0,nai-k-4-0"]  # none found: one call says so
    fake.rows[8] = Row(8, "nai-k-3-0", 1001, comment=_forged(9, "nai-k-3-0", 0))
    assert set(client.jobs([], ["nai-k-3-0"])) == {8}  # the comment is not printed


def test_a_job_named_like_one_killed_mid_submit_is_neither_adopted_nor_watched(
        service: UseCases) -> None:
    """A job whose sbatch did not answer is looked up by name; someone else's job of
    that name is not adopted, and not asked about by id afterwards either."""
    fake: FakeSlurm = service.runtime.slurm.run  # type: ignore[attr-defined]
    fake.sbatch_down = True
    job_id = service.jobs.submit(Caller("root", uid=0, admin=True),
                                 spec_from_dict({"command": "x"}), None).id
    service.tick()
    name = f"nai-{service.runtime.key}-{job_id}-0"  # type: ignore[attr-defined]
    fake.rows[7] = Row(7, name, 4242, state="RUNNING")
    fake.sbatch_down = False
    for _ in range(4):
        assert _state(service, job_id) in (JobState.QUEUED, JobState.RUNNING)
    assert f"--name={name}" in fake.asked
    ours = [i for i in fake.rows if i != 7]
    assert len(ours) == 1  # submitted anew, once
    assert not [a for a in fake.asked if a.startswith("--jobs=") and "7" in a[7:].split(",")]


@pytest.mark.parametrize("text", [
    "5|RUNNING|None|0|N/A|N/A|n1\n5|PENDING|Priority|4242|N/A|N/A|\n",  # twice
    "5|RUNNING|None|0|N/A|N/A|n1\n6|PENDING|Priority|0|N/A|N/A|\n",  # 6 not asked for
    "5|RUNNING|None|0|N/A|N/A|n1\nx\n",  # a line that does not parse
    "5|RUNNING|None|0|N/A|N/A|n1|nai-k-1-0\n",  # a field too many
])
def test_squeue_lines_not_as_asked_are_not_believed(text: str) -> None:
    with pytest.raises(st.SlurmTextError):
        st.parse_squeue_text(text, asked={5})


@pytest.mark.parametrize("text", [
    "5|COMPLETED|0:0|0|||n1\n5|FAILED|1:0|4242|||n1\n",
    "5|COMPLETED|0:0|0|||n1\n6|FAILED|1:0|0|||n1\n",
    "5|COMPLETED|0:0|0|||n1|name\n",
])
def test_sacct_lines_not_as_asked_are_not_believed(text: str) -> None:
    with pytest.raises(st.SlurmTextError):
        st.parse_sacct(text, asked={5})


def test_the_completion_log_keeps_a_requeued_jobs_last_end() -> None:
    text = "5|NODE_FAIL|0:0|0|||n1\n5|COMPLETED|0:0|0|||n1\n"
    assert st.parse_sacct(text, asked={5}, last_wins=True)[5].state == "COMPLETED"


@pytest.mark.parametrize("text", [
    "JobId=5 JobName=x JobState=COMPLETED ExitCode=0:0 JobState=FAILED ExitCode=3:0",
    "JobId=5 JobName=x ExitCode=0:0 JobState=FAILED ExitCode=3:0",
    "JobId=6 JobName=x JobState=FAILED ExitCode=3:0",
    "JobId=5 JobName=x\nJobId=5 JobState=FAILED ExitCode=3:0",
    "slurm_load_jobs error: Invalid job id specified",
])
def test_scontrol_answers_not_about_that_one_job_are_not_believed(text: str) -> None:
    with pytest.raises(st.SlurmTextError):
        st.parse_scontrol_exit(text, 5)


def test_nai_asks_slurm_for_no_free_text() -> None:
    assert not {"Name", "Comment", "AdminComment"} & set(st.SQUEUE_FIELDS)
    assert not {"JobName", "Comment", "AdminComment"} & set(st.SACCT_FIELDS)


def test_a_forged_poll_is_an_error_not_an_answer() -> None:
    fake = FakeSlurm()
    fake.rows[5] = Row(5, "nai-k-1-0", 0, state="RUNNING")

    def doubled(argv: list[str], stdin: str | None = None, env: object = None) -> str:
        out = fake(argv, stdin, env)
        return out + out if argv[0] in ("squeue", "sacct") else out

    client = SlurmClient(SlurmConfig(accounting="database"))
    client.run = doubled  # type: ignore[method-assign]
    with pytest.raises(SlurmError, match="twice"):
        client.jobs([5])
    fake.rows[5].state = "COMPLETED"
    with pytest.raises(SlurmError, match="twice"):
        client.ended([5], since=time.time())
