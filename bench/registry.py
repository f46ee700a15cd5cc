"""Registries: what a new dataset version costs.

Part A: a dataset of many files is pushed as version 1 (`nai dataset push`'s code,
`registry_commands.push_folder`) to a personal daemon, then 1% of its files change
and it is pushed as version 2. Bytes are counted where they leave the client: the
packed uploads (`ServerClient.upload_pack`). Prints each push's bytes as a fraction
of the dataset's size; version 1 is the baseline (about 1.0).

Target: version 2 sends at most 0.02 of the dataset's size.

Part B: how long a job on a 5 GB dataset (5 files of 1 GiB) takes to start, from
submit until its process runs (it writes a timestamp), against the same job without a
dataset, measured in turns. The dataset's files are links to the blobs, not copies.

Target: the job with the dataset starts within 2x the time of the job without.

    .venv/bin/python bench/registry.py [--files N] [--file-kib K] [--changed 0.01]
                                       [--big-gib 5] [--starts 5] [--skip-a|--skip-b]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nai_tui.cli.registry_commands import push_folder
from nai_tui.remote.client import ServerClient
from nai_tui.remote.transports import local_http_client
from nai_tui.sync.hashcache import HashCache

BIN = Path(sys.executable).parent
TARGET = 0.02
START_TARGET = 2.0
GIB = 1 << 30


class PackMeter:
    """Counts the bytes of every upload pack a client sends."""

    def __init__(self) -> None:
        self.bytes = 0
        self.packs = 0

    def wrap(self, client: ServerClient) -> None:
        real = client.upload_pack

        def counted(stream: Iterable[bytes]) -> dict[str, Any]:
            self.packs += 1
            return real(self._count(stream))

        client.upload_pack = counted  # type: ignore[method-assign]

    def _count(self, stream: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in stream:
            self.bytes += len(chunk)
            yield chunk

    def take(self) -> tuple[int, int]:
        taken = (self.bytes, self.packs)
        self.bytes = self.packs = 0
        return taken


def make_dataset(root: Path, files: int, size: int) -> int:
    root.mkdir(parents=True)
    for i in range(files):
        sub = root / f"shard-{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"{i:06d}.bin").write_bytes(os.urandom(size))
    old = time.time() - 60  # past the hash cache's "racily clean" window
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    return files * size


def make_big_dataset(root: Path, files: int) -> int:
    """`files` files of 1 GiB each, written fast: a random 1 MiB block repeated, after a
    first MiB of each file's own (so that every file is a blob of its own)."""
    root.mkdir(parents=True)
    block = os.urandom(1 << 20)
    for i in range(files):
        with (root / f"part-{i}.bin").open("wb") as f:
            f.write(os.urandom(1 << 20))
            for _ in range(GIB // len(block) - 1):
                f.write(block)
    return files * GIB


def time_start(client: ServerClient, stamp_dir: Path, dataset: str | None) -> float:
    """Seconds from submit until the job's process has written its start timestamp."""
    stamp = stamp_dir / f"start-{time.monotonic_ns()}"
    spec: dict[str, Any] = {"command": f"date +%s.%N > {stamp}.tmp && mv {stamp}.tmp {stamp}",
                            "gpus": 0}
    if dataset:
        spec["dataset"] = dataset
    submitted = time.time()
    job = client.submit(spec=spec)
    deadline = time.monotonic() + 60
    while not stamp.exists():
        if time.monotonic() > deadline:
            sys.exit(f"job {job.id} did not start: {client.job(job.id)}")
        time.sleep(0.002)
    started = float(stamp.read_text())
    while client.job(job.id).state not in ("succeeded", "failed"):
        time.sleep(0.01)
    return started - submitted


def part_b(client: ServerClient, tmp: Path, gib: int, starts: int) -> None:
    data = tmp / "big"
    t0 = time.perf_counter()
    total = make_big_dataset(data, gib)
    made = time.perf_counter() - t0
    t0 = time.perf_counter()
    with HashCache(tmp / "hashes-b.sqlite") as cache:
        push_folder(client, "dataset", "big", data, cache=cache)
    pushed = time.perf_counter() - t0
    shutil.rmtree(data)  # the blob store has it now
    stamps = tmp / "stamps"
    stamps.mkdir()
    plain: list[float] = []
    with_data: list[float] = []
    for _ in range(starts):  # in turns, so that drift hits both alike
        plain.append(time_start(client, stamps, None))
        with_data.append(time_start(client, stamps, "big"))
    base, big = statistics.median(plain), statistics.median(with_data)
    ratio = big / base
    print(f"dataset: {gib} files x 1 GiB = {total / 1e9:.2f} GB (written in {made:.1f} s, "
          f"pushed in {pushed:.1f} s)")
    print(f"  job without a dataset: median {base * 1000:7.1f} ms to start over {starts} runs "
          f"(baseline)")
    print(f"  job with the dataset:  median {big * 1000:7.1f} ms to start over {starts} runs")
    verdict = "ok" if ratio <= START_TARGET else "MISSED"
    print(f"part B: start with a {total / 1e9:.1f} GB dataset takes {ratio:.2f}x the start "
          f"without (target <= {START_TARGET}x): {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--file-kib", type=int, default=256)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of files")
    parser.add_argument("--big-gib", type=int, default=5, help="part B: GiB (1 per file)")
    parser.add_argument("--starts", type=int, default=5, help="part B: starts of each job")
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip-a", action="store_true")
    skip.add_argument("--skip-b", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nai-bench-registry-"))
    sock = tmp / "nai.sock"
    daemon = subprocess.Popen(
        [str(BIN / "nai-server"), "run", "--personal", "--state-dir", str(tmp / "state"),
         "--socket", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if time.monotonic() > deadline or daemon.poll() is not None:
                sys.exit("nai-server did not start")
            time.sleep(0.02)
        if not args.skip_a:
            part_a(sock, tmp, args)
        if not args.skip_b:
            with ServerClient(local_http_client(sock), name="bench") as client:
                part_b(client, tmp, args.big_gib, args.starts)
    finally:
        daemon.terminate()
        daemon.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def part_a(sock: Path, tmp: Path, args: argparse.Namespace) -> None:
    """Bytes sent by a new version that changes a few files."""
    data = tmp / "dataset"
    total = make_dataset(data, args.files, args.file_kib * 1024)
    meter = PackMeter()
    with ServerClient(local_http_client(sock), name="bench") as client, \
            HashCache(tmp / "hashes.sqlite") as cache:
        meter.wrap(client)
        start = time.perf_counter()
        v1 = push_folder(client, "dataset", "bench", data, cache=cache)
        t1 = time.perf_counter() - start
        sent1, packs1 = meter.take()

        paths = sorted(p for p in data.rglob("*.bin"))
        changed = random.Random(1).sample(paths, max(1, round(len(paths) * args.changed)))
        for path in changed:
            path.write_bytes(os.urandom(args.file_kib * 1024))
        start = time.perf_counter()
        v2 = push_folder(client, "dataset", "bench", data, cache=cache)
        t2 = time.perf_counter() - start
        sent2, packs2 = meter.take()
    assert (v1.version, v2.version) == (1, 2)
    ratio = sent2 / total
    print(f"dataset: {args.files} files x {args.file_kib} KiB = {total / 1e6:.1f} MB; "
          f"version 2 changes {len(changed)} files ({args.changed:.0%})")
    print(f"  version 1: {sent1 / 1e6:9.2f} MB in {packs1} pack(s), {t1:6.2f} s, "
          f"{sent1 / total:.4f} of the dataset (baseline)")
    print(f"  version 2: {sent2 / 1e6:9.2f} MB in {packs2} pack(s), {t2:6.2f} s, "
          f"{ratio:.4f} of the dataset")
    verdict = "ok" if ratio <= TARGET else "MISSED"
    print(f"part A: new version sends {ratio:.4f} of the dataset "
          f"(target <= {TARGET}): {verdict}")


if __name__ == "__main__":
    main()
