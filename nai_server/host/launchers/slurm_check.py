"""`nai-server check` with `launcher: slurm`: do sbatch and squeue answer, and is the
state dir on a filesystem the compute nodes share (jobs run in their directories
there, read their data from it and write their logs and outputs into it)?"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from nai_server.config import ServerConfig
from nai_server.host.launchers.slurm import SlurmClient, SlurmError

# Filesystems that live on one machine: compute nodes other than this one cannot see
# a state dir on them (unless each mounts the same thing by other means).
LOCAL_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs",
                      "f2fs", "vfat", "ramfs", "jfs", "reiserfs", "bcachefs", "squashfs"})


def fs_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem `path` is on, from /proc/self/mountinfo."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if " - " not in line or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        after = line.split(" - ", 1)[1].split(" ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, after[0]
    return kind


def shared_fs_warning(kind: str | None, hosts: list[str], me: str) -> str | None:
    """A warning when the state dir's filesystem is local and jobs may run elsewhere."""
    others = sorted({h for h in hosts if h.split(".")[0] != me.split(".")[0]})
    if kind is None or kind not in LOCAL_FS or not others:
        return None
    listed = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
    return (f"the state dir is on a local filesystem ({kind}) but Slurm runs jobs on other "
            f"nodes ({listed}): put state_dir on a filesystem they all mount (NFS, Lustre...)")


def check_slurm(config: ServerConfig) -> tuple[dict[str, Any], list[str], list[str]]:
    """(report, problems, warnings) about the Slurm side of this server."""
    client = SlurmClient(config.slurm)
    report: dict[str, Any] = {"conf": str(config.slurm.conf) if config.slurm.conf else None}
    problems: list[str] = []
    warnings: list[str] = []
    missing = [p for p in ("sbatch", "squeue", "sacct", "scancel") if client.which(p) is None]
    if missing:
        problems.append(f"not installed here: {', '.join(missing)} (install slurm-client)")
        return report, problems, warnings
    conf = config.slurm.conf
    if conf is not None and not conf.is_file():  # Slurm's clients would retry for 60 s
        problems.append(f"slurm.conf: no file {conf} (set slurm.conf to the cluster's "
                        f"slurm.conf, or leave it out to use Slurm's default)")
        return report, problems, warnings
    try:
        report["jobs_in_queue"] = len(client.run(["squeue", "--noheader", "--format=%i"]).split())
        report["squeue"] = "answers"
    except SlurmError as exc:
        report["squeue"] = "fails"
        problems.append(f"squeue: {exc}")
    try:  # slurmctld says where a one-CPU job would run, and submits nothing
        client.run(["sbatch", "--test-only", "--wrap", "true"])
        report["sbatch"] = "answers"
    except SlurmError as exc:
        report["sbatch"] = "fails"
        problems.append(f"sbatch: {exc}")
    hosts: list[str] = []
    try:
        hosts = client.run(["sinfo", "-h", "-N", "-o", "%n"]).split()
    except SlurmError as exc:
        warnings.append(f"sinfo: {exc}")
    report["nodes"] = sorted(set(hosts))
    kind = fs_type(config.state)
    report["state_fs"] = kind
    if (warning := shared_fs_warning(kind, hosts, socket.gethostname())) is not None:
        warnings.append(warning)
    return report, problems, warnings


def describe(report: dict[str, Any]) -> str:
    """The Slurm part of `nai-server check`'s report, in one line."""
    return (f"sbatch {report.get('sbatch', 'not tried')}, squeue "
            f"{report.get('squeue', 'not tried')}; nodes: "
            f"{', '.join(report.get('nodes', [])) or 'unknown'}; state dir on "
            f"{report.get('state_fs') or 'an unknown filesystem'}")
