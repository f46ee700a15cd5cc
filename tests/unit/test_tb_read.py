"""The TensorBoard reader on event files written by PyTorch's SummaryWriter (captured
once: tests/data/metrics/torch-summarywriter.py), read whole and then incrementally."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nai_server.host import tb_read

pytest.importorskip("tensorboard")
RUNS = Path(__file__).resolve().parents[1] / "data" / "metrics" / "torch-summarywriter"


def read(roots: list[Path], cursors: dict[str, int]) -> dict:
    done = subprocess.run([sys.executable, "-I", tb_read.__file__, *map(str, roots)],
                          input=json.dumps(cursors), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_summarywriter_scalars_whole_then_only_what_is_new(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(RUNS, runs)
    first = read([runs, tmp_path / "missing"], {})
    got = {(p["step"], k): v for p in first["points"] for k, v in p.items()
           if k not in ("step", "time")}
    # add_scalar's tag as it is; add_scalars' sub-runs keep apart by their folder.
    assert got == {(1, "Loss/train"): 1.0, (2, "Loss/train"): 0.5, (3, "Loss/train"): 0.3333333,
                   (1, "acc_train/acc"): 0.6, (2, "acc_train/acc"): 0.7,
                   (3, "acc_train/acc"): 0.8, (1, "acc_val/acc"): 0.5,
                   (2, "acc_val/acc"): 0.6, (3, "acc_val/acc"): 0.7}
    again = read([runs, tmp_path / "missing"], first["cursors"])
    assert again["points"] == [] and again["cursors"] == first["cursors"]
    # A record cut in the middle (still being written: the last, a histogram) is left
    # for the next reading, which reads it and nothing twice.
    main = next(runs.glob("exp/events.out.tfevents.*"))
    data = main.read_bytes()
    main.write_bytes(data[:-7])
    cut = read([runs], {})
    key = next(k for k in cut["cursors"] if k.count("/") == 2)
    assert sum("Loss/train" in p for p in cut["points"]) == 3
    assert cut["cursors"][key] < len(data) - 7
    main.write_bytes(data)
    rest = read([runs], cut["cursors"])
    assert rest["points"] == [] and rest["cursors"][key] == len(data)
