"""Submits per second over the socket with 8 clients and a 100,000-job history
(target >= 500/s), and how long the daemon takes to open that store; with
`--before-src DIR` (an older checkout, e.g. `git worktree add --detach /tmp/old <commit>`)
the same on its code in the same run, rounds alternating so that the machine's load
hits both alike, and the ratios new/old.

Each round starts a personal daemon on a copy of one seeded state dir, drains it (only
queueing is measured), and submits `--submissions` jobs from `--clients` connections.

    .venv/bin/python bench/submit.py [--submissions N] [--clients C] [--rounds R]
                                     [--history N] [--before-src DIR]
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

from nai_server.store.db import TinyDbStore

BIN = Path(sys.executable).parent


def seeded(root: Path, history: int) -> Path:
    state = root / "seed"
    state.mkdir()
    store = TinyDbStore(state)
    seed_archive(store, history, hot=0)
    store.close()
    return state


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(seed: Path, src: str | None, count: int,
              clients: int) -> tuple[float, float, float]:
    """Submits per second, seconds from the daemon's start to its first answer, and the
    daemon's CPU seconds per submit (what a loaded machine's share of a core divides)."""
    with tempfile.TemporaryDirectory() as tmp:
        state, sock = Path(tmp) / "state", Path(tmp) / "nai.sock"
        shutil.copytree(seed, state)
        os.sync()
        env = {**os.environ, "PYTHONPATH": src or str(Path(__file__).parent.parent)}
        started = time.perf_counter()
        daemon = subprocess.Popen([str(BIN / "nai-server"), "run", "--personal", "--state-dir",
                                   str(state), "--socket", str(sock), "--fake-gpus", "8"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seed = seeded(Path(tmp), args.history)
        codes: dict[str, str | None] = {"new": None}
        if args.before_src:
            codes["old"] = args.before_src
        rates: dict[str, list[float]] = {name: [] for name in codes}
        opens: dict[str, list[float]] = {name: [] for name in codes}
        cpus: dict[str, list[float]] = {name: [] for name in codes}
        for _ in range(args.rounds):
            for name, src in codes.items():
                rate, opened, cpu = one_round(seed, src, args.submissions, args.clients)
                rates[name].append(rate)
                opens[name].append(opened)
                cpus[name].append(cpu)
    for name in codes:
        print(f"{name}: submits/s, {args.clients} clients, {args.history:,} archived: "
              f"median {statistics.median(rates[name]):.0f} "
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
