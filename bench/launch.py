"""Launch latency and overhead of running through nai.

1. Time from a GPU freeing up (the job holding it exits) to the next queued job's
   process running on it (target < 1 s; Slurm's main scheduling loop runs every 60 s,
   its backfill loop every 30 s).
2. Wall time of a short job submitted through nai (submit → logs followed to the
   end) vs the same command run directly: the ratio is nai's overhead.

    .venv/bin/python bench/launch.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
SHORT_JOB = f"{sys.executable} -c 'sum(range(3 * 10**6))'"


def start_daemon(tmp: Path) -> subprocess.Popen[bytes]:
    sock = tmp / "nai.sock"
    proc = subprocess.Popen([str(BIN / "nai-server"), "run", "--personal", "--state-dir",
                             str(tmp / "state"), "--socket", str(sock), "--fake-gpus", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc


def wait_state(client: httpx.Client, job: int, states: set[str]) -> None:
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{job}").json()["state"] not in states:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job} never reached {states}")
        time.sleep(0.005)


def free_to_running(client: httpx.Client, tmp: Path, rounds: int) -> list[float]:
    samples = []
    for i in range(rounds):
        fifo = tmp / f"fifo{i}"
        os.mkfifo(fifo)
        stamp = tmp / f"started{i}"
        holder = client.post("/v1/jobs", json={"spec": {
            "command": f"read x < {fifo}", "gpus": 1}}).json()["id"]
        wait_state(client, holder, {"running"})
        nxt = client.post("/v1/jobs", json={"spec": {
            "command": f"date +%s.%N > {stamp}", "gpus": 1}}).json()["id"]
        time.sleep(0.3)  # let the queued job settle as waiting
        freed = time.time()
        with open(fifo, "w") as f:  # the holder reads a line and exits: the GPU is free
            f.write("go\n")
        wait_state(client, nxt, {"succeeded", "failed"})
        samples.append(float(stamp.read_text()) - freed)
    return samples


def through_nai(client: httpx.Client, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        job = client.post("/v1/jobs", json={"spec": {"command": SHORT_JOB, "gpus": 1}}).json()
        with client.stream("GET", f"/v1/jobs/{job['id']}/logs",
                           params={"follow": "true"}) as response:
            for _ in response.iter_bytes():
                pass
        samples.append(time.perf_counter() - start)
    return samples


def direct(rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(["/bin/sh", "-c", SHORT_JOB], check=True)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        daemon = start_daemon(tmp)
        try:
            client = httpx.Client(transport=httpx.HTTPTransport(uds=str(tmp / "nai.sock")),
                                  base_url="http://nai", timeout=60)
            latency = free_to_running(client, tmp, args.rounds)
            nai = through_nai(client, args.rounds)
        finally:
            daemon.terminate()
            daemon.wait(30)
    plain = direct(args.rounds)
    print(f"GPU freed -> next job running: median {statistics.median(latency) * 1e3:.0f} ms, "
          f"max {max(latency) * 1e3:.0f} ms (target < 1000 ms; Slurm's main loop: 60 s, "
          f"ratio {statistics.median(latency) / 60:.4f})")
    print(f"short job wall time: through nai {statistics.median(nai) * 1e3:.0f} ms, "
          f"direct {statistics.median(plain) * 1e3:.0f} ms, "
          f"ratio {statistics.median(nai) / statistics.median(plain):.2f}")


if __name__ == "__main__":
    main()
