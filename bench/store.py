"""Write latency of the job store with 100 vs 100,000 archived jobs.

History lives in monthly archive files, so a write to the hot database should cost
the same however long the history is. Prints p50 latency for both and the ratio
(target ≤ 1.2), plus writes per second.

    .venv/bin/python bench/store.py [--writes N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from nai_server.store.db import TinyDbStore

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
        docs = [{**job, "id": i, "ended_at": 1.7e9 + month * MONTH_SECONDS} for i in ids]
        # Insert straight into the hot table in one write, then archive the batch.
        store.jobs.insert_multiple(docs)
        store.archive_jobs(list(ids))
        next_id += batch
    for _ in range(hot):
        store.insert_job({**job, "state": "queued"})


def one_write(store: TinyDbStore, i: int) -> float:
    """A submit-like write pair (insert, then a state change); seconds per write."""
    start = time.perf_counter()
    job_id = store.insert_job({"user": "bob", "state": "queued", "n": i})
    store.update_job(job_id, {"state": "running"})
    return (time.perf_counter() - start) / 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        stores = {100: TinyDbStore(Path(a)), 100_000: TinyDbStore(Path(b))}
        for count, store in stores.items():
            seed_archive(store, count, hot=100)
        os.sync()  # let the seeding's writeback finish before timing fsyncs
        samples: dict[int, list[float]] = {100: [], 100_000: []}
        # Interleave the two stores so that disk noise hits both alike.
        for i in range(args.writes):
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


if __name__ == "__main__":
    main()
