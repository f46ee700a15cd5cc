"""The README's examples work as written: the served model's curl sends rows as wide as
the example job trains on, and the metrics one-liner says nai must be importable."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_predict_examples_send_rows_the_example_model_takes() -> None:
    train = (ROOT / "jobs" / "numpy-regression" / "train.py").read_text()
    width = re.search(r"n, d = \d+, (\d+)", train)
    assert width, "jobs/numpy-regression/train.py no longer sets `n, d = N, D`"
    features = int(width.group(1))
    found = 0
    for doc in (ROOT / "README.md", ROOT / "docs" / "services.md"):
        for body in re.findall(r"curl [^\n]*/predict -d '([^']*)'", doc.read_text()):
            rows = json.loads(body)["inputs"]
            assert all(len(row) == features for row in rows), f"{doc.name}: {body}"
            found += 1
    assert found >= 2


def test_the_metrics_one_liner_says_the_job_needs_nai_installed() -> None:
    text = " ".join((ROOT / "README.md").read_text().split())
    at = text.index("from nai_metrics import log")
    assert "pip install ." in text[at:at + 400]
