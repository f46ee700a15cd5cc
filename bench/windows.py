"""Team windows drawn from a real cluster trace, the way ../shared/traces/family/ was
drawn from synthetic ones: a time window of up to ten days, and a random set of its users
whose jobs on 1-8 GPUs offer about 0.85 of one 8-GPU server; time limits synthetic, as
ceil_to_hour(duration x max(1, lognormal(median 2, sigma 0.7))). A policy judged on the
16 shared traces alone can be tuned to them; these windows are a held-out check.

The source is a trace in the Gen-Parallel-Workloads training-data layout (columns
u_id, user, gpu_num, interval = seconds since the previous submission, run_time,
new_status), e.g. Helios/training_data/helios_data_training.csv or
Philly/training_data/philly_data_training.csv of DIR-LAB/Gen-Parallel-Workloads. The
files are not in this repository; the windows are written where replay.py finds them:

    .venv/bin/python bench/windows.py SOURCE.csv --tag philly --out DIR [--count 12]
                                      [--first 1]
    .venv/bin/python bench/replay.py --traces --dir DIR
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path

DAY = 86_400
HEADER = ["job_id", "user", "submit_time", "duration", "num_gpus", "status", "time_limit"]


@dataclass(frozen=True)
class Job:
    name: str
    user: str
    submit: float
    duration: float
    gpus: int
    status: str


def read_source(path: Path) -> list[Job]:
    """The source trace's jobs, submit times summed from the gaps between submissions."""
    jobs, at = [], 0.0
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"u_id", "user", "gpu_num", "interval", "run_time"} - set(reader.fieldnames or ())
        if missing:
            raise SystemExit(f"{path}: no column {', '.join(sorted(missing))}; expected "
                             "the Gen-Parallel-Workloads training-data layout")  # fmt: skip
        for row in reader:
            at += float(row["interval"])
            jobs.append(Job(row["u_id"], f"u{row['user']}", at, float(row["run_time"]),
                            int(row["gpu_num"]), row.get("new_status", "Pass")))  # fmt: skip
    return jobs


def draw(
    jobs: list[Job], rng: random.Random, *, load: float = 0.85, gpus: int = 8, days: int = 10
) -> list[Job] | None:
    """One window's jobs, or None if no try of 200 found users offering ``load`` within
    0.04 (at least 40 jobs of at least 3 users)."""
    usable = [job for job in jobs if 1 <= job.gpus <= gpus and job.duration > 0]
    first, last = usable[0].submit, usable[-1].submit
    span = min(days * DAY, last - first)
    for _ in range(200):
        start = rng.uniform(first, max(first, last - span))
        window = [job for job in usable if start <= job.submit < start + span]
        work: dict[str, float] = {}
        for job in window:
            work[job.user] = work.get(job.user, 0.0) + job.duration * job.gpus
        users = sorted(work)
        rng.shuffle(users)
        chosen: set[str] = set()
        total = 0.0
        for user in users:
            if (total + work[user]) / (gpus * span) <= load + 0.04:
                chosen.add(user)
                total += work[user]
            if total / (gpus * span) >= load - 0.03:
                break
        picked = [job for job in window if job.user in chosen]
        if abs(total / (gpus * span) - load) <= 0.04 and len(picked) >= 40 and len(chosen) >= 3:
            return picked
    return None


def rows(picked: list[Job], tag: str, rng: random.Random) -> list[list[object]]:
    """The window as trace rows: times from its first submission, synthetic limits."""
    base = min(job.submit for job in picked)
    out: list[list[object]] = []
    for job in sorted(picked, key=lambda j: j.submit):
        over = max(1.0, math.exp(rng.gauss(math.log(2), 0.7)))
        limit = math.ceil(job.duration * over / 3600) * 3600
        out.append([f"{tag}-{job.name}", job.user, int(job.submit - base), int(job.duration),
                    job.gpus, job.status, limit])  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the real trace (training-data layout)")
    parser.add_argument("--tag", required=True, help="name prefix of the windows, e.g. philly")
    parser.add_argument("--out", type=Path, required=True, help="folder; windows go in family/")
    parser.add_argument("--count", type=int, default=12, help="how many windows")
    parser.add_argument("--first", type=int, default=1, help="seed number of the first")
    args = parser.parse_args()
    jobs = read_source(args.source)
    folder = args.out / "family"
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(args.first, args.first + args.count):
        rng = random.Random(n * 7919)
        picked = draw(jobs, rng)
        if picked is None:
            print(f"{args.tag}_w{n}: no window offers the load; skipped")
            continue
        path = folder / f"{args.tag}_w{n}.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(HEADER)
            writer.writerows(rows(picked, args.tag, rng))
        users = len({job.user for job in picked})
        print(f"{path.name}: {len(picked)} jobs of {users} users")


if __name__ == "__main__":
    main()
