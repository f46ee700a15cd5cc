"""`nai demo` works after a plain `pip install` (issue 17, item 14): its job needs only
the standard library, is run by the Python nai runs under, and comes with the package,
not from a checkout's jobs/ folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from nai_tui import demo_job

BIN = Path(sys.executable).parent


def test_the_demo_job_needs_only_the_standard_library(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_bytes(Path(demo_job.__file__).read_bytes())
    # -S: no site-packages (no numpy, nothing installed); -I: nothing from the env or cwd
    ran = subprocess.run([sys.executable, "-I", "-S", str(script), "--epochs", "5"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "done: val_acc" in ran.stdout
    summary = json.loads((tmp_path / "output" / "summary.json").read_text())
    assert summary["epochs"] == 5 and summary["val_acc"] > 0.6
    lines = (tmp_path / "output" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5]


def test_nai_demo_runs_end_to_end_outside_a_checkout(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_RUNTIME_DIR": str(tmp_path / "run"), "PATH": "/usr/bin:/bin"}
    (tmp_path / "run").mkdir()
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = tmp_path / "outputs"
    demo = subprocess.run([str(BIN / "nai"), "demo", "--to", str(out)], env=env, cwd=work,
                          capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "epoch  40" in demo.stdout and "succeeded" in demo.stderr
    assert json.loads((out / "summary.json").read_text())["epochs"] == 40
    assert {Path(line).name for line in demo.stdout.splitlines() if line.startswith("/")} \
        >= {"summary.json", "weights.json"}
    assert "personal nai-server stopped" in demo.stderr
