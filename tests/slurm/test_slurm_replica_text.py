"""Services' replicas on Slurm, the pure parts (no cluster needed): the sbatch line of
a replica, its time limit from the partition, handles, records written before handles,
and the TCP link's handshake steps."""

from __future__ import annotations

from nai_server.core.service_rules import handle_pid
from nai_server.host.launchers import slurm_text as st
from nai_server.host.launchers.slurm_replicas import slurm_id
from nai_server.host.replicas import parse_local
from nai_server.serving import link
from nai_server.store.service_records import _read

PARTITIONS = (
    "PartitionName=main AllowGroups=ALL Default=YES MaxTime=UNLIMITED State=UP\n"
    "PartitionName=gpu Default=NO DefaultTime=01:00:00 MaxTime=2-00:00:00 State=UP\n"
    "PartitionName=odd Default=NO MaxTime=$(reboot) State=UP\n")


def test_a_replica_asks_for_its_partitions_longest_time() -> None:
    assert st.partition_max_time(PARTITIONS, None) == "UNLIMITED"  # the default's
    assert st.partition_max_time(PARTITIONS, "gpu") == "2-00:00:00"
    assert st.partition_max_time(PARTITIONS, "odd") == "UNLIMITED"  # not a time
    assert st.partition_max_time(PARTITIONS, "nope") == "UNLIMITED"
    assert st.partition_max_time("", None) == "UNLIMITED"


def test_a_replicas_sbatch_line() -> None:
    sub = st.Submission(name="nai-k-svc-3.7", comment="nai service adder", job_dir="/s/3.7",
                        log="/s/3.7/log", cwd="/s/3.7/model", uid=1001, gid=1002)
    argv = st.replica_sbatch_argv(sub, 2, "2-00:00:00", 3 << 30, 1.5, "gpu", None,
                                  ["--exclusive"])
    assert argv[:2] == ["sbatch", "--parsable"]
    for arg in ("--job-name=nai-k-svc-3.7", "--chdir=/s/3.7/model", "--output=/s/3.7/log",
                "--no-requeue", "--time=2-00:00:00", "--uid=1001", "--gid=1002",
                "--gres=gpu:2", "--mem=3072M", "--cpus-per-task=2", "--partition=gpu"):
        assert arg in argv
    assert argv[-1] == "--exclusive" and "--requeue" not in argv
    bare = st.replica_sbatch_argv(sub, 0, "UNLIMITED", None, None, None, None)
    assert not [a for a in bare if a.startswith(("--gres", "--mem", "--partition"))]


def test_handles_say_which_host_runs_a_replica() -> None:
    assert slurm_id("slurm:42") == 42 and slurm_id("42:7") is None
    assert slurm_id("slurm:4x") is None and slurm_id(None) is None
    assert slurm_id("slurm:" + "9" * 30) is None
    assert parse_local("42:7") is not None and parse_local("slurm:42") is None
    assert handle_pid("42:7") == 42 and handle_pid("slurm:42") is None
    assert handle_pid(None) is None


def test_a_replica_recorded_before_handles_reads_as_a_local_one() -> None:
    doc = _read({"name": "s", "replica_docs": [
        {"index": 0, "pid": 42, "pid_start": 7}, {"index": 1, "pid": None,
                                                   "pid_start": None},
        {"index": 2, "handle": "slurm:9"}]})
    assert [r.get("handle") for r in doc["replica_docs"]] == ["42:7", None, "slurm:9"]
    assert not any("pid" in r for r in doc["replica_docs"])


def test_the_link_handshake_proves_the_token_both_ways() -> None:
    token, other = b"t" * 64, b"u" * 64
    nonce_d, nonce_r = link.nonce(), link.nonce()
    assert link.read_hello(link.hello(nonce_d)) == nonce_d
    assert link.read_hello(b"GET / HTTP/1.1\r\n") is None
    answer = link.answer(token, nonce_d, nonce_r)
    assert link.read_answer(token, nonce_d, answer) == nonce_r
    assert link.read_answer(other, nonce_d, answer) is None  # not the replica
    assert link.read_answer(token, link.nonce(), answer) is None  # replayed
    assert link.read_answer(token, nonce_d, b"zz " + nonce_r.hex().encode()) is None
    done = link.finish(token, nonce_r, nonce_d)
    assert link.read_finish(token, nonce_r, nonce_d, done)
    assert not link.read_finish(other, nonce_r, nonce_d, link.finish(other, nonce_r, nonce_r))
    assert not link.read_finish(token, link.nonce(), nonce_d, done)  # replayed
    # The replica's proof is not the daemon's: one side's answer never stands for the other.
    assert not link.read_finish(token, nonce_d, nonce_r, answer.split()[0])
