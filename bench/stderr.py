"""What telling a job's stderr from its stdout costs (host.stderr_tagger).

The same jobs run through the real launcher twice over, with their stderr through the
tagger (marked in log.stderr) and straight into the log as before, alternately, and the
ratio of the medians is printed:

- bulk: 200 MB to stderr, then 200 MB to stdout, in 64 KiB writes (dd);
- lines: 200,000 short lines alternately to stdout and stderr, each flushed (a chatty
  training loop), which makes the most marks;
- start: launching a job that exits at once (the tagger, forked by the launcher's fork
  server, must say it reads first).

    .venv/bin/python bench/stderr.py [--rounds N] [--mb MB]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nai_server.host import stderr_marks
from nai_server.host.launchers.local import LaunchRequest, LocalLauncher

LINES = (f"{sys.executable} -c \"import sys\n"
         "for i in range(100000):\n"
         "    print('step', i, 'loss 0.5', flush=True)\n"
         "    print('warning: step', i, file=sys.stderr, flush=True)\"")


def bulk(mb: int) -> str:
    count = mb * 16  # 64 KiB blocks
    return (f"dd if=/dev/zero bs=64k count={count} status=none >&2; "
            f"dd if=/dev/zero bs=64k count={count} status=none")


def run_job(launcher: LocalLauncher, root: Path, command: str,
            tagged: bool) -> tuple[float, float, int]:
    """Seconds to start, seconds from start to the end being seen, marks written."""
    job_dir = Path(tempfile.mkdtemp(dir=root))
    (job_dir / "code").mkdir()
    # As an account named, as a user's job is on a shared server (its tagger forked).
    request = LaunchRequest(job_id=1, job_dir=job_dir, command=command,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                            cwd=job_dir / "code", tag_stderr=tagged,
                            uid=os.getuid(), gid=os.getgid())
    began = time.perf_counter()
    handle = launcher.start(request)
    started = time.perf_counter()
    while launcher.status(job_dir, handle)[0] == "running":
        time.sleep(0.002)
    ended = time.perf_counter()
    marks = job_dir / stderr_marks.MARKS_FILE
    count = marks.stat().st_size // stderr_marks.RECORD.size if marks.exists() else 0
    for name in os.listdir(job_dir):
        path = job_dir / name
        if path.is_file():
            path.unlink()
    return started - began, ended - started, count


def measure(launcher: LocalLauncher, root: Path, name: str, command: str, rounds: int,
            start_only: bool = False) -> None:
    times: dict[bool, list[float]] = {True: [], False: []}
    marks = 0
    for _ in range(rounds):
        for tagged in (False, True):  # alternately: the host's load hits both alike
            start, run, count = run_job(launcher, root, command, tagged)
            times[tagged].append(start if start_only else start + run)
            marks = max(marks, count)
    plain, tagged_ = statistics.median(times[False]), statistics.median(times[True])
    print(f"{name:6} plain {plain * 1000:9.1f} ms   tagged {tagged_ * 1000:9.1f} ms   "
          f"ratio {tagged_ / plain:5.2f}   marks {marks}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mb", type=int, default=200, help="MB to each stream (bulk)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nai-bench-stderr-") as tmp:
        root = Path(tmp)
        launcher = LocalLauncher()  # one, as the daemon has: its fork server starts once
        run_job(launcher, root, "exit 0", True)
        measure(launcher, root, "bulk", bulk(args.mb), args.rounds)
        measure(launcher, root, "lines", LINES, args.rounds)
        measure(launcher, root, "start", "exit 0", max(10, args.rounds * 5), start_only=True)


if __name__ == "__main__":
    main()
