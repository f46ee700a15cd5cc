"""`nai-server check` with `launcher: slurm`: whether Slurm answers, and whether the
state dir is somewhere the compute nodes can see."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from nai_server.cli.check import run_check
from nai_server.config import load_config
from nai_server.host.launchers.slurm_check import fs_type, shared_fs_warning
from nai_server.testing.slurm_cluster import SlurmCluster

MOUNTINFO = """\
31 30 0:41 / /shared/scratch\\040space rw - lustre 10.0.0.1@tcp:/fs rw
30 22 0:40 / /shared rw,relatime shared:9 - nfs4 srv:/export rw,vers=4.2
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
"""


def test_the_state_dirs_filesystem_is_found_by_its_longest_mount_point() -> None:
    assert fs_type(Path("/var/lib/nai"), MOUNTINFO) == "ext4"
    assert fs_type(Path("/shared/nai"), MOUNTINFO) == "nfs4"
    assert fs_type(Path("/sharedx/nai"), MOUNTINFO) == "ext4"
    assert fs_type(Path("/shared/scratch space/nai"), MOUNTINFO) == "lustre"


def test_a_local_state_dir_is_a_warning_only_when_jobs_run_elsewhere() -> None:
    warning = shared_fs_warning("ext4", ["login1", "gpu1", "gpu2"], "login1")
    assert warning is not None and "gpu1, gpu2" in warning and "ext4" in warning
    assert shared_fs_warning("nfs4", ["gpu1"], "login1") is None
    assert shared_fs_warning("ext4", ["login1.example.org"], "login1") is None
    assert shared_fs_warning(None, ["gpu1"], "login1") is None


def _check(tmp_path: Path, capsys: pytest.CaptureFixture[str], conf: Path) -> dict:
    config = load_config(None, mode="multi-user", state_dir=tmp_path / "state",
                         socket=tmp_path / "nai.sock", launcher="slurm",
                         slurm={"conf": str(conf), "command_timeout": 10})
    (tmp_path / "state").mkdir(parents=True)
    run_check(config, as_json=True)
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_check_says_whether_slurm_answers(cluster: SlurmCluster, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    report = _check(tmp_path, capsys, cluster.conf)
    slurm = report["slurm"]
    assert (slurm["sbatch"], slurm["squeue"]) == ("answers", "answers")
    assert slurm["nodes"] == [socket.gethostname()]
    assert not any("sbatch" in p or "squeue" in p for p in report["problems"])
    assert not any("no GPUs" in p for p in report["problems"])  # they are Slurm's
    assert not any("local filesystem" in w for w in report["warnings"])  # one node: here

    broken = _check(tmp_path / "b", capsys, tmp_path / "no-such-slurm.conf")
    assert any("no-such-slurm.conf" in p for p in broken["problems"])
    assert "sbatch" not in broken["slurm"]
