"""The one-line helper a job may use to report metrics (nai_metrics)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nai_metrics


def test_writes_json_lines_where_nai_says(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("NAI_METRICS_FILE", str(target))
    assert nai_metrics.enabled()
    nai_metrics.log(step=1, loss=0.5)
    nai_metrics.log({"acc": np.float32(0.25), "val/loss": np.float64("nan")}, step=np.int64(2))
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "time"} for r in rows] == [
        {"step": 1, "loss": 0.5}, {"step": 2, "acc": 0.25, "val/loss": "nan"}]
    assert all(isinstance(r["time"], float) for r in rows)
    with pytest.raises(TypeError, match="loss='high' is not a number"):
        nai_metrics.log(step=3, loss="high")
    assert len(target.read_text().splitlines()) == 2


def test_does_nothing_outside_nai(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NAI_METRICS_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert not nai_metrics.enabled()
    nai_metrics.log(step=1, loss=0.5)
    assert list(tmp_path.iterdir()) == []


def test_standard_library_only() -> None:
    """Importable in a bare interpreter (-I -S: no site-packages), as a user's env may be."""
    path = Path(nai_metrics.__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-I", "-S", "-c",
                           f"import sys; sys.path.insert(0, {str(path)!r}); "
                           f"import nai_metrics; nai_metrics.log(step=1, x=1)"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
