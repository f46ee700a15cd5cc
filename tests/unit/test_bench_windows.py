"""bench/windows.py: the held-out windows drawn from a real trace are what the family's
README describes (load, users, synthetic limits), and the same seed draws the same window."""

from __future__ import annotations

import csv
import importlib.util
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_windows", ROOT / "bench" / "windows.py")
assert _spec is not None and _spec.loader is not None
windows = importlib.util.module_from_spec(_spec)
sys.modules["bench_windows"] = windows  # dataclasses look their module up there
_spec.loader.exec_module(windows)

HOUR = 3_600


def _source(path: Path) -> Path:
    """Twenty days of jobs by twelve users (some on 0 or 16 GPUs: left out), in the
    training-data layout."""
    rng = random.Random(5)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["u_id", "user", "gpu_num", "cpu_num", "node_num", "interval",
                         "run_time", "wall_time", "new_status"])  # fmt: skip
        for n in range(3_000):
            gpus = rng.choice([0, 1, 1, 1, 2, 4, 8, 16])
            writer.writerow([n, rng.randrange(12), gpus, 1, 1, 576, rng.randrange(60, 4 * HOUR),
                             0, "Pass"])  # fmt: skip
    return path


def test_a_window_offers_the_load_of_one_server_with_limits_above_each_run(tmp_path: Path) -> None:
    jobs = windows.read_source(_source(tmp_path / "source.csv"))
    assert jobs[1].submit - jobs[0].submit == 576
    picked = windows.draw(jobs, random.Random(1))
    assert picked is not None
    span = 10 * windows.DAY
    offered = sum(job.duration * job.gpus for job in picked) / (8 * span)
    assert abs(offered - 0.85) <= 0.04
    assert all(1 <= job.gpus <= 8 for job in picked)
    assert len({job.user for job in picked}) >= 3
    rows = windows.rows(picked, "t", random.Random(1))
    assert rows[0][2] == 0  # times from the window's first submission
    for _, _, _, duration, _, _, limit in rows:
        assert limit % HOUR == 0 and limit >= duration  # type: ignore[operator]


def test_the_same_seeds_draw_the_same_windows_and_replay_reads_them(tmp_path: Path) -> None:
    source = _source(tmp_path / "source.csv")
    command = [sys.executable, str(ROOT / "bench" / "windows.py"), str(source), "--tag", "t",
               "--count", "2"]  # fmt: skip
    for out in ("a", "b"):
        subprocess.run([*command, "--out", str(tmp_path / out)], check=True, capture_output=True)
    drawn = sorted(p.name for p in (tmp_path / "a" / "family").iterdir())
    assert drawn == ["t_w1.csv", "t_w2.csv"]
    for name in drawn:
        assert (tmp_path / "a" / "family" / name).read_bytes() == (
            tmp_path / "b" / "family" / name
        ).read_bytes()
    from nai_server.cli.simulate import read_trace

    trace = read_trace(tmp_path / "a" / "family" / "t_w1.csv")
    assert trace and all(job.time_limit for job in trace)


def test_a_source_in_another_layout_is_refused_with_what_is_expected(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("job_id,user,submit_time,duration,num_gpus\n1,u0,0,60,1\n")
    command = [sys.executable, str(ROOT / "bench" / "windows.py"), str(other), "--tag", "t",
               "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode != 0
    assert "training-data layout" in done.stderr
