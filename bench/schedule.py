"""Scheduling speed: one plan() pass with 10,000 queued jobs on 8 GPUs (target
< 20 ms), and submissions per second through the API with an empty vs a 100,000-job
history (target >= 500/s, ratio >= 0.8).

    .venv/bin/python bench/schedule.py [--submissions N] [--clients C]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
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


def submissions_per_second(history: int, count: int, clients: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
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
            deadline = time.monotonic() + 30
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            transport = httpx.HTTPTransport(uds=str(sock))
            with httpx.Client(transport=transport, base_url="http://nai") as admin:
                admin.put("/v1/drain", json={"drained": True})  # measure queueing only

            def worker(n: int) -> None:
                # A lean keep-alive client (pre-built requests, raw socket): the figure
                # is the daemon's capacity, not the client library's, on one 2-core box.
                conn = socket.socket(socket.AF_UNIX)
                conn.connect(str(sock))
                reader = Reader(conn.recv)
                for i in range(n):
                    body = json.dumps({"spec": {"command": f"python train.py --seed {i}",
                                                "gpus": 1}}).encode()
                    conn.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: nai\r\n"
                                 b"Content-Type: application/json\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)
                    assert b'"state":"queued"' in reader.response()
                conn.close()

            threads = [threading.Thread(target=worker, args=(count // clients,))
                       for _ in range(clients)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return (count // clients * clients) / (time.perf_counter() - start)
        finally:
            daemon.terminate()
            daemon.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    for policy in sorted(sched.POLICIES):
        print(f"plan() {policy:9s}: 10,000 queued jobs on 8 GPUs: "
              f"{plan_pass(policy) * 1e3:.2f} ms (target < 20 ms)")
    empty = submissions_per_second(0, args.submissions, args.clients)
    full = submissions_per_second(100_000, args.submissions, args.clients)
    print(f"submissions/s, empty history:       {empty:7.0f} (target >= 500)")
    print(f"submissions/s, 100,000-job history: {full:7.0f}")
    print(f"ratio full/empty: {full / empty:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
