"""Scheduling speed: one plan() pass with 10,000 queued jobs on 8 GPUs (target
< 20 ms), and submissions per second through the API with an empty vs a 100,000-job
history (target >= 500/s with 8 clients, ratio >= 0.8), and the daemon's RSS after
2,000 submits of which 500 trivial jobs ran, against its RSS at start (target <= 1.5).
`--tick` measures instead the daemon's loop: the CPU time of one tick with 5,000 queued
and 50 running jobs on 50 fake GPUs; `--before-src DIR` runs the same ticks on an older
checkout (e.g. `git worktree add /tmp/old <commit>`) in the same run, alternating rounds
between the two so that the machine's drift hits both, and reports new/old.

    .venv/bin/python bench/schedule.py [--submissions N] [--clients C] [--runs N]
    .venv/bin/python bench/schedule.py --tick [--before-src DIR] [--rounds N] [--write]
                                              [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from api import Reader
from store import seed_archive

from nai_server.core import scheduling as sched
from nai_server.store.db import TinyDbStore

BIN = Path(sys.executable).parent


def plan_pass(policy: str, jobs: int = 10_000, repeats: int = 20) -> float:
    rng = random.Random(7)
    queue = [sched.QueuedJob(id=i, user=f"u{i % 17}", group=None, gpus=rng.choice([1, 1, 2, 4, 8]),
                             gpu_memory=None, submitted_at=float(i), time_limit=3600)
             for i in range(jobs)]
    gpus = tuple(sched.GpuView(index=i, uuid=f"g{i}", memory_total=80 << 30,
                               memory_free=80 << 30, foreign=False,
                               held_by=None if i >= 5 else 10_000 + i) for i in range(8))
    running = tuple(sched.RunningJob(id=10_000 + i, user="r", group=None, gpus=(i,),
                                     started_at=0.0, time_limit=3600) for i in range(5))
    cluster = sched.Cluster(gpus=gpus, running=running, cpu_slots=4)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sched.plan(queue, cluster, 100.0, policy=policy)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def _daemon(tmp: str, history: int) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A personal daemon on 8 fake GPUs over `history` archived jobs."""
    state = Path(tmp) / "state"
    state.mkdir()
    if history:
        store = TinyDbStore(state)
        seed_archive(store, history, hot=0)
        store.close()
    sock = Path(tmp) / "nai.sock"
    daemon = subprocess.Popen([str(BIN / "nai-server"), "run", "--personal", "--state-dir",
                               str(state), "--socket", str(sock), "--fake-gpus", "8"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120  # a long history takes a while to open
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield daemon, sock
    finally:
        daemon.terminate()
        daemon.wait(30)


def _submit(sock: Path, count: int, clients: int, command: str) -> float:
    """`count` jobs submitted by `clients` connections at once; seconds it took."""

    def worker(n: int) -> None:
        # A lean keep-alive client (pre-built requests, raw socket): the figure is the
        # daemon's capacity, not the client library's, on one 2-core box.
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(str(sock))
        reader = Reader(conn.recv)
        for i in range(n):
            body = json.dumps({"spec": {"command": command.format(i=i), "gpus": 1}}).encode()
            conn.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: nai\r\n"
                         b"Content-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert b'"state":"queued"' in reader.response()
        conn.close()

    threads = [threading.Thread(target=worker, args=(count // clients,)) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def _client(sock: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://nai",
                        timeout=120)  # the first tick over a long history may be slow


def submissions_per_second(history: int, count: int, clients: int) -> float:
    with tempfile.TemporaryDirectory() as tmp, _daemon(tmp, history) as (_, sock):
        with _client(sock) as admin:
            admin.put("/v1/drain", json={"drained": True})  # measure queueing only
        seconds = _submit(sock, count, clients, "python train.py --seed {i}")
        return (count // clients * clients) / seconds


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def rss_growth(submits: int, runs: int, clients: int) -> tuple[float, float]:
    """The daemon's RSS (MiB) at start (warm: one listing answered) and after `runs`
    trivial jobs ran and `submits - runs` more were queued."""
    with (tempfile.TemporaryDirectory() as tmp, _daemon(tmp, 0) as (daemon, sock),
          _client(sock) as api):
        api.get("/v1/jobs")
        start = rss_mib(daemon.pid)
        _submit(sock, runs, clients, "true {i}")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = api.get("/v1/jobs", params={"state": "succeeded", "limit": 1}).json()
            if done["total"] >= runs // clients * clients:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"only {done['total']} of {runs} jobs ended")
        api.put("/v1/drain", json={"drained": True})
        _submit(sock, submits - runs, clients, "python train.py --seed {i}")
        api.get("/v1/jobs")
        return start, rss_mib(daemon.pid)


def tick_child(queued: int, running: int, profile: bool, write: bool) -> None:
    """Runs in a child process (whose PYTHONPATH picks the checkout): a service on
    `running` fake GPUs, each held by a running job (a sleeping process), `queued` jobs
    waiting behind them. Reads a count per line on stdin; answers each with the CPU
    milliseconds of that many ticks, one by one, as a JSON list. With `write`, a
    setting is written before each tick (not timed): the store has changed, though
    no job has, so whatever the tick keeps from the last one must be checked again."""
    import cProfile
    import pstats

    import nai_server
    from nai_server.core.spec import spec_from_dict, spec_to_dict
    from nai_server.testing import make_service

    with tempfile.TemporaryDirectory() as tmp:
        service = make_service(Path(tmp), gpus=running)
        sleepers = [subprocess.Popen(["sleep", "3600"], start_new_session=True)
                    for _ in range(running)]
        try:
            now, spec = time.time(), spec_from_dict({"command": "python train.py", "gpus": 1})
            uuids = [g.uuid for g in service.runtime.gpus.probe().gpus]
            base = {"user": "alice", "group": None, "spec": spec_to_dict(spec), "code_tree": None,
                    "time_limit": None}
            with service.lock:
                for i, proc in enumerate(sleepers):
                    stat = Path(f"/proc/{proc.pid}/stat").read_bytes()
                    ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
                    service.store.insert_job({
                        **base, "state": "running", "submitted_at": now - 1000 + i,
                        "started_at": now, "pid": proc.pid, "pid_start": ticks, "gpus": [i],
                        "gpu_uuids": [uuids[i]]})
                rng = random.Random(7)
                for i in range(queued):
                    service.store.insert_job({**base, "user": f"u{i % 17}", "state": "queued",
                                              "submitted_at": now + i, "spec": spec_to_dict(
                                                  spec_from_dict({"command": f"train {i}",
                                                                  "gpus": rng.choice([1, 2])}))})
            for _ in range(3):  # the first ticks sweep, archive and warm the caches
                service.tick()
            print(json.dumps({"src": str(Path(nai_server.__file__).parent.parent)}), flush=True)
            profiler = cProfile.Profile() if profile else None
            for line in sys.stdin:
                times = []
                for i in range(int(line)):
                    if write:
                        with service.lock:
                            service.store.set_setting("bench", i)
                    start = time.process_time()
                    if profiler:
                        profiler.enable()
                    service.tick()
                    if profiler:
                        profiler.disable()
                    times.append((time.process_time() - start) * 1e3)
                print(json.dumps(times), flush=True)
            if profiler:
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
            jobs = service.store.hot_jobs()
            assert sum(j["state"] == "running" for j in jobs) == running, "a sleeper ended"
            assert sum(j["state"] == "queued" for j in jobs) == queued, "a queued job left"
        finally:
            for proc in sleepers:
                proc.kill()
                proc.wait()
            service.close()


def tick_cpu(sources: dict[str, str | None], rounds: int, ticks: int, queued: int,
             running: int, profile: bool, write: bool) -> dict[str, list[float]]:
    """Per checkout (None: this one), the CPU ms of `rounds` x `ticks` ticks, the
    checkouts taking turns round by round (the first one alternating too)."""
    children = {}
    for name, src in sources.items():
        env = {**os.environ, "PYTHONPATH": src or str(Path(__file__).parent.parent)}
        args = [sys.executable, __file__, "--tick-child", str(queued), str(running)]
        args += ["--profile"] if profile else []
        children[name] = subprocess.Popen(args + (["--write"] if write else []), env=env,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          text=True)
    times: dict[str, list[float]] = {name: [] for name in sources}
    try:
        for name, child in children.items():
            assert child.stdout is not None
            print(f"{name}: {json.loads(child.stdout.readline())['src']}")
        order = list(children)
        for r in range(rounds):
            for name in order if r % 2 == 0 else reversed(order):
                child = children[name]
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(f"{ticks}\n")
                child.stdin.flush()
                times[name] += json.loads(child.stdout.readline())
    finally:
        for child in children.values():
            assert child.stdin is not None
            child.stdin.close()
        for child in children.values():
            if child.wait(120):
                raise RuntimeError(f"a tick child failed ({child.returncode})")
    return times


def report_ticks(args: argparse.Namespace) -> None:
    sources = {"new": None, **({"old": args.before_src} if args.before_src else {})}
    times = tick_cpu(sources, args.rounds, args.ticks, 5000, 50, args.profile, args.write)
    what = ", a write before each" if args.write else ""
    for name, ms in times.items():
        print(f"tick CPU, 5,000 queued + 50 running jobs{what}, {name}: median "
              f"{statistics.median(ms):.2f} ms, min {min(ms):.2f} ms ({len(ms)} ticks)")
    if "old" in times:
        # Each round's ratio compares ticks run one right after the other.
        per_round = [statistics.median(n) / statistics.median(o) for n, o in zip(
            _rounds(times["new"], args.ticks), _rounds(times["old"], args.ticks), strict=True)]
        print(f"new/old: {statistics.median(per_round):.3f} (median of the rounds' ratios; "
              f"target <= 1.02), rounds {' '.join(f'{r:.2f}' for r in per_round)}")


def _rounds(values: list[float], size: int) -> list[list[float]]:
    return [values[i:i + size] for i in range(0, len(values), size)]


def main() -> None:
    if sys.argv[1:2] == ["--tick-child"]:
        tick_child(int(sys.argv[2]), int(sys.argv[3]), "--profile" in sys.argv,
                   "--write" in sys.argv)
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--runs", type=int, default=500,
                        help="trivial jobs run for the RSS figure (0: skip it)")
    parser.add_argument("--runs-submits", type=int, default=2000,
                        help="jobs submitted in all for the RSS figure")
    parser.add_argument("--rss-only", action="store_true", help="only the RSS figure")
    parser.add_argument("--tick", action="store_true", help="only the tick's CPU figure")
    parser.add_argument("--before-src", help="--tick: an older checkout to compare with")
    parser.add_argument("--rounds", type=int, default=10, help="--tick: alternations")
    parser.add_argument("--ticks", type=int, default=10, help="--tick: ticks per round")
    parser.add_argument("--profile", action="store_true",
                        help="--tick: each checkout's cProfile (by own time) on stderr")
    parser.add_argument("--write", action="store_true",
                        help="--tick: the store written (a setting) before each tick")
    args = parser.parse_args()
    if args.tick:
        report_ticks(args)
        return
    if args.rss_only:
        args.submissions = 0
    for policy in () if args.rss_only else sorted(sched.POLICIES):
        print(f"plan() {policy:9s}: 10,000 queued jobs on 8 GPUs: "
              f"{plan_pass(policy) * 1e3:.2f} ms (target < 20 ms)")
    if args.submissions:
        empty = submissions_per_second(0, args.submissions, args.clients)
        full = submissions_per_second(100_000, args.submissions, args.clients)
        print(f"submissions/s, {args.clients} clients, empty history:       {empty:7.0f} "
              f"(target >= 500)")
        print(f"submissions/s, {args.clients} clients, 100,000-job history: {full:7.0f}")
        print(f"ratio full/empty: {full / empty:.2f} (target >= 0.8)")
    if args.runs:
        start, after = rss_growth(args.runs_submits, args.runs, args.clients)
        print(f"daemon RSS at start {start:.1f} MiB, after {args.runs_submits} submits and "
              f"{args.runs} runs {after:.1f} MiB: ratio {after / start:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
