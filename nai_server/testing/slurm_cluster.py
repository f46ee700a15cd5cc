"""A real single-node Slurm cluster in a temporary directory, for the tests and the
benchmark: munged, slurmctld and slurmd with their own config (found through
SLURM_CONF), state, spool, sockets and free ports, and `gpus` fake GPUs.

Facts this relies on (Slurm 22.05, measured on Debian): a GPU needs a device file,
and a symlink to /dev/null will do; without slurmdbd, exit codes of ended jobs come
from `JobCompType=jobcomp/filetxt` through `sacct -c`; slurmd ignores SIGTERM while it
cannot reach slurmctld, so it is stopped first and killed after a timeout; the default
batch scheduling delay (3 s) would dominate every small job."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from nai_server.testing import wait_for

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sacct", "scancel")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
NODE = "nai-node1"
CLUSTER = "naitest"


def missing() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    if os.geteuid() != 0:
        return "a Slurm cluster for other users needs root"
    lacking = [name for name in BINARIES if _which(name) is None]
    if lacking:
        return (f"Slurm is not installed (no {', '.join(lacking)}): "
                f"apt-get install slurmctld slurmd slurm-client munge")
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no munge user (install the munge package)"
    return None


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join((os.environ.get("PATH", ""), *SBIN)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SlurmCluster:
    """A running cluster; `env` is what a Slurm client (or nai's launcher) needs."""

    root: Path
    gpus: int  # per node
    nodes: int = 1
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def node_names(self) -> list[str]:
        return [node_name(i, self.nodes) for i in range(self.nodes)]

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    @property
    def jobcomp(self) -> Path:
        return self.root / "state" / "jobcomp.txt"

    def client_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A Slurm client command against this cluster."""
        return subprocess.run(list(argv), env=self.client_env(), capture_output=True,
                              text=True, timeout=timeout)

    def log(self, which: str) -> str:
        path = self.root / "log" / f"{which}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def idle(self) -> bool:
        """Whether every node is up and takes jobs."""
        out = self.run("sinfo", "-h", "-N", "-o", "%t").stdout.split()
        return len(out) == self.nodes and all(s in ("idle", "mix", "alloc") for s in out)

    def stop(self, timeout: float = 10) -> None:
        """slurmd first (it ignores SIGTERM while slurmctld is gone), then slurmctld and
        munged; SIGKILL whatever has not exited after `timeout`."""
        slurmds = [name for name in self.procs if name.startswith("slurmd")]
        for name in (*slurmds, "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Job steps outlive slurmd by design: end those of this cluster's jobs.
        for pid in _stepds(self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _stepds(root: Path) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if cmdline.read_bytes().startswith(b"slurmstepd") and \
                    str(root).encode() in Path(cmdline.parent / "environ").read_bytes():
                found.append(int(cmdline.parent.name))
    return found


def write_config(root: Path, gpus: int, cpus: int = 32, kill_wait: int = 2,
                 nodes: int = 1) -> None:
    """slurm.conf, gres.conf and the fake GPU device files under `root`: `nodes` nodes
    (each its own slurmd on this host, on its own port) with `gpus` GPUs each."""
    for sub in ("etc", "state", "spool", "log", "run", "dev"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for index in range(gpus * nodes):
        dev = root / "dev" / f"nvidia{index}"
        if not dev.is_symlink():
            dev.symlink_to("/dev/null")
    host = socket.gethostname()
    names = [node_name(i, nodes) for i in range(nodes)]
    lines = [
        f"ClusterName={CLUSTER}",
        f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={_free_port()}",
        "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={root / 'munge' / 'munge.socket'}",
        f"StateSaveLocation={root / 'state'}",
        # %n: each node's slurmd has its own (they all run on this host).
        f"SlurmdSpoolDir={root / 'spool'}/%n",
        f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'run'}/slurmd-%n.pid",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log'}/slurmd-%n.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill", "SchedulerParameters=batch_sched_delay=0",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/filetxt", f"JobCompLoc={root / 'state' / 'jobcomp.txt'}",
        "SlurmdParameters=config_overrides", "ReturnToService=2",
        "MailProg=/bin/true", f"KillWait={kill_wait}", "MinJobAge=300",
        "InactiveLimit=0", "Waittime=0", "MessageTimeout=10",
        "SlurmctldTimeout=30", "SlurmdTimeout=60",
        "GresTypes=gpu" if gpus else "",
    ]
    gres = f"Gres=gpu:{gpus}" if gpus else ""
    gres_lines = []
    for index, name in enumerate(names):
        lines.append(f"NodeName={name} NodeAddr=127.0.0.1 NodeHostname={host} "
                     f"Port={_free_port()} Sockets=1 CoresPerSocket={cpus} ThreadsPerCore=1 "
                     f"RealMemory=64000 {gres} State=UNKNOWN")
        if gpus:
            first = index * gpus
            gres_lines.append(f"NodeName={name} Name=gpu "
                              f"File={root / 'dev'}/nvidia[{first}-{first + gpus - 1}]")
    lines.append(f"PartitionName=main Nodes={','.join(names)} Default=YES MaxTime=INFINITE "
                 f"State=UP OverSubscribe=NO")
    (root / "etc" / "slurm.conf").write_text("\n".join(x for x in lines if x) + "\n")
    (root / "etc" / "gres.conf").write_text("\n".join(gres_lines) + "\n")
    (root / "etc" / "cgroup.conf").write_text("")


def node_name(index: int, nodes: int) -> str:
    return NODE if nodes == 1 else f"nai-node{index + 1}"


def start(root: Path | None = None, gpus: int = 4, timeout: float = 60,
          nodes: int = 1) -> SlurmCluster:
    """Start munged, slurmctld and a slurmd per node (`gpus` GPUs each); return once
    every node takes jobs."""
    root = Path(tempfile.mkdtemp(prefix="nai-slurm-")) if root is None else root
    os.chmod(root, 0o755)  # job owners' slurmstepd and clients reach the munge socket
    write_config(root, gpus, nodes=nodes)
    cluster = SlurmCluster(root, gpus, nodes)
    try:
        _start_munge(cluster)
        env = {**os.environ, **cluster.env}
        daemons = [("slurmctld", [_need("slurmctld"), "-D", "-i"])]
        daemons += [(f"slurmd-{node}", [_need("slurmd"), "-D", "-N", node])
                    for node in cluster.node_names]
        for name, argv in daemons:
            out = open(root / "log" / f"{name}.out", "ab")  # noqa: SIM115 - the daemon's
            cluster.procs[name] = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
            out.close()
        wait_for(lambda: _died(cluster) or cluster.idle(), timeout=timeout,
                 what="the Slurm node to be idle")
        dead = _died(cluster)
        if dead:
            raise RuntimeError(f"{dead} exited:\n{cluster.log(dead)[-3000:]}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _need(name: str) -> str:
    path = _which(name)
    if path is None:
        raise RuntimeError(missing() or f"no {name}")
    return path


def _died(cluster: SlurmCluster) -> str | None:
    return next((n for n, p in cluster.procs.items() if p.poll() is not None), None)


def _start_munge(cluster: SlurmCluster) -> None:
    munge = pwd.getpwnam("munge")
    home = cluster.root / "munge"
    home.mkdir(mode=0o755, exist_ok=True)
    os.chown(home, munge.pw_uid, munge.pw_gid)
    key = home / "munge.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "wb") as out:
        out.write(os.urandom(1024))
    os.chown(key, munge.pw_uid, munge.pw_gid)
    sock = home / "munge.socket"
    cluster.procs["munged"] = subprocess.Popen(
        [_need("munged"), "-F", "--force", f"--socket={sock}", f"--key-file={key}",
         f"--pid-file={home / 'munged.pid'}", f"--log-file={home / 'munged.log'}",
         f"--seed-file={home / 'munged.seed'}"],
        user=munge.pw_uid, group=munge.pw_gid, extra_groups=[], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: cluster.procs["munged"].poll() is not None or sock.exists(),
             timeout=10, what="munged's socket")
    if cluster.procs["munged"].poll() is not None:
        log = home / "munged.log"
        raise RuntimeError(f"munged exited: {log.read_text() if log.exists() else ''}")


def main() -> None:  # pragma: no cover - a manual check: python -m ...slurm_cluster
    cluster = start()
    try:
        print(cluster.conf)
        started = time.monotonic()
        print(cluster.run("sbatch", "--wrap", "echo hi", "--gres=gpu:1").stdout)
        print(f"{time.monotonic() - started:.3f}s")
        input("enter to stop")
    finally:
        cluster.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
