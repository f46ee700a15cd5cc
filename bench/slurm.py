"""nai on Slurm vs sbatch directly, on a real single-node cluster with fake GPUs
(nai_server.testing.slurm_cluster; needs root and Slurm installed).

1. submit → running: from the submit call to the job's first command running, through
   nai (POST /v1/jobs) and through `sbatch` directly.
2. GPU freed → next running: the one GPU's holder exits; how long until the job waiting
   for it runs.
3. N tiny jobs: wall time from the first submit to the last job's end.
4. (--serve) a served model whose replica is a Slurm job: cold start (`POST
   /v1/services` to the first answer), and the p50/p99 latency of a tiny predict through
   the daemon's proxy (over the authenticated TCP link) vs straight to the replica's
   port on one kept-alive connection (handshake done once, as the proxy's pool does).

Each is printed as a ratio nai/direct (target ≤ 1.2) and nai's overhead in ms. nai
polls squeue every `--poll` seconds (slurm.poll_seconds): that interval bounds how soon
it sees a job start or end, and is part of what is measured.

    .venv/bin/python bench/slurm.py [--rounds 5] [--jobs 500] [--poll 0.1] [--serve 500]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from nai_server.host import replica_link
from nai_server.testing import slurm_cluster

BIN = Path(sys.executable).parent
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "lost"}


def wait(predicate: Callable[[], bool], what: str, timeout: float = 120,
         every: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        time.sleep(every)


def start_daemon(tmp: Path, cluster: slurm_cluster.SlurmCluster, poll: float
                 ) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    sock = tmp / "nai.sock"
    config = {"mode": "personal", "state_dir": str(tmp / "state"), "socket": str(sock),
              "launcher": "slurm", "scheduler": {"tick_seconds": poll},
              "slurm": {"conf": str(cluster.conf), "accounting": "jobcomp",
                        "poll_seconds": poll}}
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([str(BIN / "nai-server"), "run", "--config", str(tmp / "config.yaml")],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "daemon.log", "wb"))  # noqa: SIM115
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://nai",
                          timeout=30)

    def answers() -> bool:
        try:
            return client.get("/v1/version").status_code == 200
        except httpx.HTTPError:
            return False

    wait(answers, "the daemon")
    return proc, client


class Direct:
    """Jobs through sbatch itself."""

    def __init__(self, cluster: slurm_cluster.SlurmCluster, tmp: Path) -> None:
        self.cluster, self.tmp = cluster, tmp

    def submit(self, command: str, gpus: int = 1) -> str:
        done = self.cluster.run("sbatch", "--parsable", f"--gres=gpu:{gpus}",
                                f"--chdir={self.tmp}", "--output=/dev/null", "--wrap", command)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        return done.stdout.strip().split(";")[0]

    def all_ended(self, ids: list[str]) -> bool:
        out = self.cluster.run("squeue", "-h", "-t", "all", "-o", "%i %T").stdout.split("\n")
        states = dict(line.split(" ", 1) for line in out if " " in line)
        return all(states.get(i, "PENDING") not in ("PENDING", "RUNNING", "COMPLETING",
                                                    "CONFIGURING") for i in ids)


class ThroughNai:
    """Jobs through the nai daemon."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def submit(self, command: str, gpus: int = 1) -> str:
        answer = self.client.post("/v1/jobs", json={"spec": {"command": command, "gpus": gpus}})
        answer.raise_for_status()
        return str(answer.json()["id"])

    def all_ended(self, ids: list[str]) -> bool:
        states: dict[str, str] = {}
        while True:  # the listing comes in pages of at most 1000
            jobs = self.client.get("/v1/jobs", params={
                "all": "true", "limit": 1000, "offset": len(states)}).json()
            rows = jobs["jobs"] if isinstance(jobs, dict) else jobs
            states.update((str(j["id"]), j["state"]) for j in rows)
            if len(rows) < 1000:
                return all(states.get(i) in TERMINAL for i in ids)


def submit_to_running(way: Direct | ThroughNai, tmp: Path, rounds: int, tag: str) -> list[float]:
    samples = []
    for i in range(rounds):
        stamp = tmp / f"{tag}-start{i}"
        started = time.time()
        way.submit(f"date +%s.%N > {stamp}")
        wait(stamp.exists, "the job to run")
        wait(lambda: stamp.read_text().strip() != "", "its stamp")  # noqa: B023
        samples.append(float(stamp.read_text()) - started)
    return samples


def freed_to_running(way: Direct | ThroughNai, tmp: Path, rounds: int, tag: str) -> list[float]:
    samples = []
    for i in range(rounds):
        gate, stamp, ended = (tmp / f"{tag}-{n}{i}" for n in ("gate", "next", "held"))
        way.submit(f"while [ ! -e {gate} ]; do sleep 0.01; done; date +%s.%N > {ended}")
        time.sleep(0.5)  # the holder runs; the next one waits for its GPU
        way.submit(f"date +%s.%N > {stamp}")
        time.sleep(0.5)
        gate.touch()
        wait(lambda: stamp.exists() and stamp.read_text().strip() != ""  # noqa: B023
             and ended.exists() and ended.read_text().strip() != "", "the next job")  # noqa: B023
        samples.append(float(stamp.read_text()) - float(ended.read_text()))
    return samples


def many(way: Direct | ThroughNai, count: int) -> float:
    started = time.perf_counter()
    ids = [way.submit("true", gpus=0) for _ in range(count)]
    # Polled every 50 ms: a listing of hundreds of jobs is not free for either side.
    wait(lambda: way.all_ended(ids), f"{count} jobs", timeout=600, every=0.05)
    return time.perf_counter() - started


PREDICT = b"def load(model_dir):\n    pass\n\ndef predict(inputs):\n    return inputs\n"
BODY = b'{"inputs": [1, 2, 3]}'


def serve(client: httpx.Client, state: Path, requests: int) -> None:
    """Part 4: a replica on Slurm, cold start and latency (see the module's doc)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(hashlib.sha256(PREDICT).hexdigest())
        info.size = len(PREDICT)
        tar.addfile(info, io.BytesIO(PREDICT))
    client.post("/v1/blobs", content=out.getvalue()).raise_for_status()
    tree = client.post("/v1/trees", json={"entries": [{
        "path": "predict.py", "size": len(PREDICT),
        "sha256": hashlib.sha256(PREDICT).hexdigest()}]})
    tree.raise_for_status()
    client.post("/v1/models", json={"name": "echo", "tree_id": tree.json()["id"]}
                ).raise_for_status()
    started = time.perf_counter()
    client.post("/v1/services", json={"name": "echo", "model": "echo@1", "gpus": 1}
                ).raise_for_status()
    route = "/v1/services/echo/invoke/predict"
    client.post(route, content=BODY, timeout=300).raise_for_status()  # waits for it
    print(f"{'replica cold start':<28} {time.perf_counter() - started:8.2f} s")
    [where] = [p for p in (state / "services").iterdir() if (p / replica_link.TOKEN).exists()]
    link = replica_link.open_link(where, os.getuid())
    replica_link.greet_sync(link, 5)
    link.setblocking(True)
    daemon = socket.socket(socket.AF_UNIX)
    daemon.connect(str(state.parent / "nai.sock"))
    # The same raw keep-alive client both ways: only the path differs.
    ways = {"direct": (link, "/predict"), "proxy": (daemon, route)}
    for name in ("direct", "proxy", "direct", "proxy"):
        sock, target = ways[name]
        samples = []
        for _ in range(requests):
            t = time.perf_counter()
            exchange(sock, target)
            samples.append(time.perf_counter() - t)
        samples.sort()
        print(f"  {name:<8} p50 {samples[len(samples) // 2] * 1000:6.2f} ms   "
              f"p99 {samples[int(len(samples) * 0.99)] * 1000:6.2f} ms")
    link.close()
    daemon.close()
    client.delete("/v1/services/echo")


def exchange(sock: socket.socket, target: str) -> None:
    """One POST of BODY on a kept-alive connection, its answer read whole."""
    sock.sendall(f"POST {target} HTTP/1.1\r\nHost: r\r\nContent-Type: application/json"
                 f"\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode("latin-1"))


def report(name: str, nai: float, direct: float) -> None:
    print(f"{name:<28} nai {nai * 1000:8.1f} ms   sbatch {direct * 1000:8.1f} ms   "
          f"ratio {nai / direct:5.2f}   overhead {(nai - direct) * 1000:+8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=500,
                        help="tiny jobs in part 3 (the issue's figure: 500)")
    parser.add_argument("--poll", type=float, default=0.1)
    parser.add_argument("--serve", type=int, default=0, metavar="N",
                        help="part 4: N requests each way to a replica on Slurm")
    args = parser.parse_args()
    why = slurm_cluster.missing()
    if why:
        sys.exit(f"cannot run: {why}")
    tmp = Path(tempfile.mkdtemp(prefix="nai-bench-slurm-"))
    os.chmod(tmp, 0o755)
    cluster = slurm_cluster.start(gpus=1)
    proc = None
    try:
        proc, client = start_daemon(tmp, cluster, args.poll)
        direct, nai = Direct(cluster, tmp), ThroughNai(client)
        print(f"slurm {cluster.conf}; nai polls squeue every {args.poll}s")
        # Rounds alternate between the two, so that neither gets the fresh cluster (a
        # job submitted while none is completing starts without waiting for a pass).
        for name, measure in (("submit -> running (median)", submit_to_running),
                              ("GPU freed -> next running", freed_to_running)):
            samples: dict[str, list[float]] = {"d": [], "n": []}
            for i in range(args.rounds):
                for tag, way in (("d", direct), ("n", nai))[:: 1 if i % 2 else -1]:
                    samples[tag] += measure(way, tmp, 1, f"{tag}{name[0]}{i}")
            if args.rounds:
                report(name, statistics.median(samples["n"]),
                       statistics.median(samples["d"]))
        if args.jobs:
            d, n = many(direct, args.jobs), many(nai, args.jobs)
            report(f"{args.jobs} tiny jobs (wall)", n, d)
        if args.serve:
            serve(client, tmp / "state", args.serve)
    finally:
        if proc is not None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(cluster.root, ignore_errors=True)


if __name__ == "__main__":
    main()
