"""Registries: what a new dataset version costs.

Part A: a dataset of many files is pushed as version 1 (`nai dataset push`'s code,
`registry_commands.push_folder`) to a personal daemon, then 1% of its files change
and it is pushed as version 2. Bytes are counted where they leave the client: the
packed uploads (`ServerClient.upload_pack`). Prints each push's bytes as a fraction
of the dataset's size; version 1 is the baseline (about 1.0).

Target: version 2 sends at most 0.02 of the dataset's size.

(Part B, job start time on a 5 GB dataset, comes with jobs that use datasets.)

    .venv/bin/python bench/registry.py [--files N] [--file-kib K] [--changed 0.01]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nai_tui.client import ServerClient
from nai_tui.hashcache import HashCache
from nai_tui.registry_commands import push_folder
from nai_tui.transports import local_http_client

BIN = Path(sys.executable).parent
TARGET = 0.02


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--file-kib", type=int, default=256)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of files")
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
    finally:
        daemon.terminate()
        daemon.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
