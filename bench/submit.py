"""Submits per second over the socket with 8 clients and a 100,000-job history
(target >= 500/s), and how long the daemon takes to open that store; with
`--before-src DIR` (an older checkout, e.g. `git worktree add --detach /tmp/old <commit>`)
the same on its code in the same run, rounds alternating so that the machine's load
hits both alike, and the ratios new/old. `--queued N` puts N of the submitting user's
jobs in the queue first; `--cap` then compares, in the same run and on the same code,
submits with the per-user cap check on (`jobs.max_active_per_user` above what the run
reaches) and off (null), and what one count by scanning the hot table would cost.

Each round starts a personal daemon on a copy of one seeded state dir, drains it (only
queueing is measured), and submits `--submissions` jobs from `--clients` connections.

    .venv/bin/python bench/submit.py [--submissions N] [--clients C] [--rounds R]
                                     [--history N] [--before-src DIR]
                                     [--queued N] [--cap]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from schedule import _submit
from store import seed_archive

from nai_server.app.active_cap import active_per_user
from nai_server.host import unix
from nai_server.store.db import TinyDbStore

BIN = Path(sys.executable).parent


def seeded(root: Path, history: int, queued: int = 0) -> Path:
    """A state dir with `history` archived jobs and `queued` of this user's queued."""
    state = root / "seed"
    state.mkdir()
    store = TinyDbStore(state)
    seed_archive(store, history, hot=0)
    me = unix.user_name(os.getuid()) or str(os.getuid())
    job = {"user": me, "state": "queued", "spec": {"command": "python train.py", "gpus": 1},
           "submitted_at": 1.7e9}
    for _ in range(queued):
        store.insert_job(dict(job))
    store.close()
    return state


def scan_seconds(seed: Path) -> float:
    """One count of the active jobs per user by scanning the hot table after a write
    (what a check without kept counts would pay on every submit), median of 20."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(seed, Path(tmp) / "s")
        store = TinyDbStore(Path(tmp) / "s")
        times = []
        for _ in range(20):
            store.insert_job({"user": "x", "state": "queued",
                              "spec": {"command": "true", "gpus": 1}, "submitted_at": 1.7e9})
            start = time.perf_counter()
            active_per_user(store.hot())
            times.append(time.perf_counter() - start)
        store.close()
        return statistics.median(times)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(seed: Path, src: str | None, count: int, clients: int,
              config: str | None = None) -> tuple[float, float, float]:
    """Submits per second, seconds from the daemon's start to its first answer, and the
    daemon's CPU seconds per submit (what a loaded machine's share of a core divides).
    `config`: the text of a config file for the daemon."""
    with tempfile.TemporaryDirectory() as tmp:
        state, sock = Path(tmp) / "state", Path(tmp) / "nai.sock"
        shutil.copytree(seed, state)
        os.sync()
        env = {**os.environ, "PYTHONPATH": src or str(Path(__file__).parent.parent)}
        argv = [str(BIN / "nai-server"), "run", "--personal", "--state-dir", str(state),
                "--socket", str(sock), "--fake-gpus", "8"]
        if config is not None:
            (Path(tmp) / "config.yaml").write_text(config)
            argv += ["--config", str(Path(tmp) / "config.yaml")]
        started = time.perf_counter()
        daemon = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=env)
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)),
                              base_url="http://nai", timeout=120) as admin:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        admin.get("/v1/version")
                        break
                    except (httpx.TransportError, OSError):
                        time.sleep(0.02)
                opened = time.perf_counter() - started
                admin.put("/v1/drain", json={"drained": True})  # measure queueing only
            cpu = _cpu_seconds(daemon.pid)
            seconds = _submit(sock, count, clients, "python train.py --seed {i}")
            done = count // clients * clients
            return done / seconds, opened, (_cpu_seconds(daemon.pid) - cpu) / done
        finally:
            daemon.terminate()
            daemon.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submissions", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--before-src", metavar="DIR")
    parser.add_argument("--queued", type=int, default=0,
                        help="the submitting user's jobs queued before the submits")
    parser.add_argument("--cap", action="store_true",
                        help="compare the per-user cap check on ('new') and off ('old')")
    args = parser.parse_args()
    if args.cap and args.before_src:
        parser.error("--cap compares the cap on and off on this code: no --before-src")
    with tempfile.TemporaryDirectory() as tmp:
        seed = seeded(Path(tmp), args.history, args.queued)
        # name: (code, config); with --cap, "old" is the cap off on the same code.
        codes: dict[str, tuple[str | None, str | None]] = {"new": (None, None)}
        if args.before_src:
            codes["old"] = (args.before_src, None)
        if args.cap:
            room = args.queued + args.submissions + 1
            codes = {"new": (None, f"jobs: {{max_active_per_user: {room}}}\n"),
                     "old": (None, "jobs: {max_active_per_user: null}\n")}
            print(f"cap on ('new', {room:,}) vs off ('old'); one count by scanning the hot "
                  f"table ({args.queued:,} queued): {scan_seconds(seed) * 1e3:.2f} ms")
        rates: dict[str, list[float]] = {name: [] for name in codes}
        opens: dict[str, list[float]] = {name: [] for name in codes}
        cpus: dict[str, list[float]] = {name: [] for name in codes}
        for _ in range(args.rounds):
            for name, (src, config) in codes.items():
                rate, opened, cpu = one_round(seed, src, args.submissions, args.clients,
                                              config)
                rates[name].append(rate)
                opens[name].append(opened)
                cpus[name].append(cpu)
    for name in codes:
        print(f"{name}: submits/s, {args.clients} clients, {args.history:,} archived, "
              f"{args.queued:,} queued: median {statistics.median(rates[name]):.0f} "
              f"({', '.join(f'{r:.0f}' for r in rates[name])}); daemon open to first "
              f"answer: median {statistics.median(opens[name]):.2f} s; daemon CPU per "
              f"submit: median {statistics.median(cpus[name]) * 1e3:.2f} ms")
    if "old" in codes:
        new, old = rates["new"], rates["old"]
        rounds = ", ".join(f"{n / o:.2f}" for n, o in zip(new, old, strict=True))
        print(f"ratio new/old: submits/s {statistics.median(new) / statistics.median(old):.2f} "
              f"(per round: {rounds}); open time "
              f"{statistics.median(opens['new']) / statistics.median(opens['old']):.2f}; CPU "
              f"per submit {statistics.median(cpus['new']) / statistics.median(cpus['old']):.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
