"""The job store with 100 vs 100,000 archived jobs: write latency, and a daemon's
listings and shows.

History lives in monthly archive files, so a write to the hot database should cost
the same however long the history is (ratio target ≤ 1.2). Then a personal daemon
per history, 300 recently finished (hot) jobs on top: `GET /v1/jobs?limit=300` p50
(target < 50 ms with 100,000 archived), a history page that reaches into the
archives, and `GET /v1/jobs/{id}` p99 idle vs while 4 clients loop on listings
(target ≤ 1.5×). `--before-src DIR` runs the last figures again on an older
checkout's daemon (e.g. the main branch before a change), in the same run.

    .venv/bin/python bench/store.py [--writes N] [--requests N] [--daemon-only]
                                    [--before-src DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from api import Reader

from nai_server.store.db import TinyDbStore

BIN = Path(sys.executable).parent
HOT = 300
ROUNDS = 5  # alternations of idle and loaded shows

MONTH_SECONDS = 30 * 86400


def seed_archive(store: TinyDbStore, count: int, hot: int) -> None:
    """`count` finished jobs spread over 12 monthly archives, `hot` active ones."""
    job = {"user": "alice", "state": "succeeded", "spec": {"command": "python train.py",
           "gpus": 1, "name": "resnet"}, "submitted_at": 1.7e9, "exit_code": 0}
    batch = 5000
    next_id = 1
    while next_id <= count:
        ids = range(next_id, min(count, next_id + batch - 1) + 1)
        month = (next_id * 12) // (count + 1)
        # Like real jobs: a code tree shared by a hundred runs, outputs of its own, a GPU.
        docs = [{**job, "id": i, "ended_at": 1.7e9 + month * MONTH_SECONDS,
                 "started_at": 1.7e9 + month * MONTH_SECONDS - 600, "gpus": [i % 2],
                 "code_tree": _digest(f"code{i // 100}"), "output_tree": _digest(f"out{i}")}
                for i in ids]
        # Insert straight into the hot table in one write, then archive the batch.
        store.jobs.insert_multiple(docs)
        store.archive_jobs(list(ids))
        next_id += batch
    for _ in range(hot):
        store.insert_job({**job, "state": "queued"})


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def one_write(store: TinyDbStore, i: int) -> float:
    """A submit-like write pair (insert, then a state change); seconds per write."""
    start = time.perf_counter()
    job_id = store.insert_job({"user": "bob", "state": "queued", "n": i})
    store.update_job(job_id, {"state": "running"})
    return (time.perf_counter() - start) / 2


class Conn:
    """One keep-alive connection to the daemon's socket, raw HTTP/1.1 GETs."""

    def __init__(self, sock: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(sock))
        self.reader = Reader(self.sock.recv)

    def get(self, path: str) -> float:
        start = time.perf_counter()
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: nai\r\n\r\n".encode())
        body = self.reader.response()
        assert body.startswith(b'{"jobs"') or b'"id"' in body, body[:200]
        return time.perf_counter() - start


def pct(samples: list[float], q: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(q * len(samples)))]


def _lister(sock: Path, path: str, go: Any, stop: Any, served: Any) -> None:
    conn = Conn(sock)
    while not stop.is_set():
        go.wait()
        conn.get(path)
        with served.get_lock():
            served.value += 1


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_figures(history: int, requests: int, src: str | None = None) -> dict[str, float]:
    """p50 of listings, and a show's p99 idle and under 4 looping listers, on a daemon
    over `history` archived jobs and HOT recently finished ones; `src`: the daemon's
    code from this source tree instead (an older checkout, for a before/after)."""
    with tempfile.TemporaryDirectory() as tmp:
        state, sock = Path(tmp) / "state", Path(tmp) / "nai.sock"
        state.mkdir()
        store = TinyDbStore(state)
        seed_archive(store, history, hot=0)
        now = time.time()
        for i in range(HOT):  # finished a moment ago: hot until archive_after_hours
            store.insert_job({"user": "alice", "state": "succeeded", "spec": {
                "command": "python train.py", "gpus": 1, "name": f"run{i}"},
                "submitted_at": now - 60, "ended_at": now, "exit_code": 0})
        store.close()
        daemon = subprocess.Popen([str(BIN / "nai-server"), "run", "--personal", "--state-dir",
                                   str(state), "--socket", str(sock), "--fake-gpus", "2"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env={**os.environ, "PYTHONPATH": src} if src else None)
        try:
            deadline = time.monotonic() + 60
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            conn = Conn(sock)
            shown = history + HOT // 2
            listing = "/v1/jobs?limit=300"
            older = f"/v1/jobs?limit=100&state=succeeded&before={history // 2}"
            cold = conn.get(older)  # the first read of the archives fills the cache
            for _ in range(20):
                conn.get(listing)
                conn.get(older)
            lists = [conn.get(listing) for _ in range(requests)]
            pages = [conn.get(older) for _ in range(requests)]
            # Each lister is a process of its own, as `nai jobs` clients are: threads
            # here would make the shows wait for this process's interpreter instead.
            # Idle and loaded shows alternate in rounds (the listers paused, then
            # listing), so that a noisy machine's drift falls on both alike.
            fork = multiprocessing.get_context("fork")
            go, stop, served = fork.Event(), fork.Event(), fork.Value("i", 0)
            listers = [fork.Process(target=_lister, args=(sock, listing, go, stop, served))
                       for _ in range(4)]
            for p in listers:
                p.start()
            idle: list[float] = []
            loaded: list[float] = []
            busy = [0.0, 0.0, 0.0]  # the daemon's CPU seconds, listings served, seconds
            for _ in range(ROUNDS):
                go.clear()
                time.sleep(0.2)  # the listers finish the listing they are in
                idle += [conn.get(f"/v1/jobs/{shown}") for _ in range(requests * 5 // ROUNDS)]
                go.set()
                time.sleep(0.2)
                cpu, count, wall = _cpu_seconds(daemon.pid), served.value, time.perf_counter()
                loaded += [conn.get(f"/v1/jobs/{shown}") for _ in range(requests * 5 // ROUNDS)]
                busy[0] += _cpu_seconds(daemon.pid) - cpu
                busy[1] += served.value - count
                busy[2] += time.perf_counter() - wall
            stop.set()
            go.set()
            for p in listers:
                p.join(30)
        finally:
            daemon.terminate()
            daemon.wait(30)
    return {"list": statistics.median(lists), "page": statistics.median(pages), "cold": cold,
            "idle": pct(idle, 0.99), "loaded": pct(loaded, 0.99),
            "idle50": statistics.median(idle), "loaded50": statistics.median(loaded),
            "cpu": busy[0] / busy[2], "listings": busy[1] / busy[2]}


def store_figures(writes: int) -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        stores = {100: TinyDbStore(Path(a)), 100_000: TinyDbStore(Path(b))}
        for count, store in stores.items():
            seed_archive(store, count, hot=100)
        os.sync()  # let the seeding's writeback finish before timing fsyncs
        samples: dict[int, list[float]] = {100: [], 100_000: []}
        # Interleave the two stores so that disk noise hits both alike.
        for i in range(writes):
            for count, store in stores.items():
                samples[count].append(one_write(store, i))
        for store in stores.values():
            store.close()
    small, large = samples[100], samples[100_000]
    p50_small, p50_large = statistics.median(small), statistics.median(large)
    print(f"hot write p50 with 100 archived jobs:     {p50_small * 1e3:7.2f} ms "
          f"({1 / p50_small:,.0f} writes/s)")
    print(f"hot write p50 with 100,000 archived jobs: {p50_large * 1e3:7.2f} ms "
          f"({1 / p50_large:,.0f} writes/s)")
    print(f"ratio large/small history: {p50_large / p50_small:.2f} (target <= 1.2)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--before-src", metavar="DIR",
                        help="also run the daemon figures on this older checkout's code")
    parser.add_argument("--daemon-only", action="store_true",
                        help="skip the store writes and the 100-job daemon")
    args = parser.parse_args()
    if not args.daemon_only:
        store_figures(args.writes)
        small_d = daemon_figures(100, args.requests)
    large_d = daemon_figures(100_000, args.requests)
    ms = {k: v * 1e3 for k, v in large_d.items()}
    if not args.daemon_only:
        print(f"GET /v1/jobs?limit=300 p50, 100 archived: {small_d['list'] * 1e3:7.2f} ms, "
              f"100,000: {ms['list']:7.2f} ms (target < 50), ratio "
              f"{large_d['list'] / small_d['list']:.2f}")
        print(f"history page (state, before) p50, 100 archived: "
              f"{small_d['page'] * 1e3:7.2f} ms, 100,000: {ms['page']:7.2f} ms "
              f"(first, cold: {ms['cold']:.0f} ms), ratio {large_d['page'] / small_d['page']:.2f}")
    print(f"GET /v1/jobs/{{id}} p99 with 100,000 archived: idle {ms['idle']:6.2f} ms, "
          f"4 clients listing {ms['loaded']:6.2f} ms, ratio "
          f"{large_d['loaded'] / large_d['idle']:.2f} (target <= 1.5)")
    print(f"GET /v1/jobs/{{id}} p50 with 100,000 archived: idle {ms['idle50']:6.2f} ms, "
          f"4 clients listing {ms['loaded50']:6.2f} ms, ratio "
          f"{large_d['loaded50'] / large_d['idle50']:.2f}")
    print(f"while 4 clients list: {large_d['listings']:.0f} listings/s served, the daemon "
          f"using {large_d['cpu']:.0%} of a core")
    if args.before_src:
        old = {k: v * 1e3 for k, v in daemon_figures(100_000, args.requests,
                                                      args.before_src).items()}
        print(f"before ({args.before_src}): listing p50 {old['list']:.2f} ms; show p99 idle "
              f"{old['idle']:.2f} ms, 4 clients listing {old['loaded']:.2f} ms, ratio "
              f"{old['loaded'] / old['idle']:.2f}; p50 ratio {old['loaded50'] / old['idle50']:.2f}")
        print(f"after/before: listing p50 {ms['list'] / old['list']:.2f}, show p99 under "
              f"listings {ms['loaded'] / old['loaded']:.2f}")


if __name__ == "__main__":
    main()
