"""The `metrics:` presets on their frameworks' output (tests/data/metrics/README.md says
which logs are real captures and which are samples of a documented format), and the
pattern checks that keep a user's regex from stalling the daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nai_server.core.metric_patterns import (
    MAX_LINE,
    Matcher,
    MatchState,
    PatternError,
    check_pattern,
    parse_metrics,
)
from nai_server.host.metrics_ingest import READ_PER_TICK, MetricsIngest

DATA = Path(__file__).resolve().parents[1] / "data" / "metrics"


def ingest(tmp_path: Path, log: bytes, metrics: object, final: bool = True) -> list[dict]:
    job_dir = tmp_path / "jobs" / "1"
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "log").write_bytes(log)
    (job_dir / "metrics.jsonl").touch()
    MetricsIngest(tmp_path / "jobs", clock=lambda: 1000.0).ingest(
        1, Matcher(parse_metrics(metrics)), final=final)
    return [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


@pytest.mark.parametrize("log", ["keras3-verbose1.log", "keras3-verbose2.log"])
def test_keras_preset_on_real_keras3_output(tmp_path: Path, log: str) -> None:
    rows = ingest(tmp_path, (DATA / log).read_bytes(), {"preset": "keras"})
    assert [r["step"] for r in rows] == [1, 2, 3]  # one point per epoch, not per redraw
    assert all(set(r) == {"step", "time", "epoch", "accuracy", "loss", "val_accuracy",
                          "val_loss"} for r in rows), rows
    assert all(0 < r["loss"] < 1 and r["time"] == 1000.0 for r in rows)


def test_hf_trainer_preset_on_real_trainer_output(tmp_path: Path) -> None:
    """transformers 5 prints the values as strings: {'loss': '0.6934', ...}."""
    rows = strip(ingest(tmp_path, (DATA / "hf-trainer.log").read_bytes(),
                        {"preset": "hf-trainer"}))
    assert [r["step"] for r in rows] == list(range(1, 12))
    assert rows[0] == {"step": 1, "loss": 0.6928, "grad_norm": 0.2005,
                       "learning_rate": 4.688e-05, "epoch": 0.25}
    assert [r["eval_accuracy"] for r in rows if "eval_loss" in r] == [0.3125, 0.3125]
    assert rows[-1]["train_loss"] == 0.6928 and rows[-1]["epoch"] == 2


def test_hf_trainer_preset_on_older_trainer_dicts(tmp_path: Path) -> None:
    """transformers 4 printed numbers, some as numpy scalars (a sample of that format)."""
    rows = strip(ingest(tmp_path, (DATA / "hf-trainer.sample.log").read_bytes(),
                        {"preset": "hf-trainer"}))
    assert len(rows) == 7
    assert rows[0] == {"step": 1, "loss": 0.6931, "grad_norm": 1.2345678,
                       "learning_rate": 3.75e-05, "epoch": 0.5}
    assert rows[2]["eval_loss"] == 0.6403 and rows[3]["grad_norm"] == 1.0423


def test_lightning_preset_on_real_tqdm_bars(tmp_path: Path) -> None:
    rows = strip(ingest(tmp_path, (DATA / "lightning-tqdm.log").read_bytes(),
                        {"preset": "lightning-progress"}))
    # Per epoch: the values that changed on its finished bar (the bar reaches 100% once
    # before the last step's loss is in, so train_loss comes twice, the final one last).
    assert [(r["epoch"], r.get("train_loss"), r.get("val_loss")) for r in rows] == [
        (0, 1.86, None), (0, 2.95, None), (0, None, 1.22),
        (1, 0.268, None), (1, 0.758, None), (1, None, 0.269),
        (2, 0.0626, None), (2, 0.204, None), (2, None, 0.0685)]
    assert all(r["step"] == r["epoch"] for r in rows)


def test_lightning_preset_on_real_rich_bar(tmp_path: Path) -> None:
    """Lightning's Rich bar (its default where rich is installed) prints into a file
    once, at the end, on two lines."""
    rows = strip(ingest(tmp_path, (DATA / "lightning-rich.log").read_bytes(),
                        {"preset": "lightning-progress"}))
    assert rows == [{"step": 2, "epoch": 2, "train_loss": 0.204},
                    {"step": 2, "epoch": 2, "val_loss": 0.068}]


def test_overlong_and_sparse_logs_are_read_in_bounded_steps(tmp_path: Path) -> None:
    # A line far longer than MAX_LINE is matched on its start; the rest is skipped.
    long_line = b"loss=0.5 " + b"x" * (50 * MAX_LINE) + b" loss=9\nloss=0.25\n"
    assert [r["loss"] for r in ingest(tmp_path, long_line, r"loss=(?P<loss>[\d.]+)")] == [
        0.5, 0.25]
    # A huge sparse log: one tick reads READ_PER_TICK bytes of it, not the whole.
    job_dir = tmp_path / "jobs" / "2"
    job_dir.mkdir()
    (job_dir / "metrics.jsonl").touch()
    with open(job_dir / "log", "wb") as f:
        f.truncate(1 << 40)
    ingest_ = MetricsIngest(tmp_path / "jobs")
    ingest_.ingest(2, Matcher(parse_metrics(r"loss=(?P<loss>[\d.]+)")))
    saved = json.loads((job_dir / "metrics.ingest").read_text())
    assert saved["offset"] == READ_PER_TICK and saved["skipping"] is True


def test_user_patterns_give_numbers_and_steps() -> None:
    matcher = Matcher(parse_metrics([r"it (?P<step>\d+): loss=(?P<loss>\S+) (?P<tag>\w+)"]))
    state = MatchState()
    points = matcher.points(["it 10: loss=0.5 best", "it 20: loss=nan x", "it 30: loss=1e-3 y",
                             "\x1b[1mit 40: loss=2\x1b[0m z"], state)
    # Words are not numbers; nan is dropped; colours are ignored.
    assert points == [{"step": 10, "loss": 0.5}, {"step": 30, "loss": 0.001},
                      {"step": 40, "loss": 2}]
    assert state.counts == [4]


@pytest.mark.parametrize(("pattern", "words"), [
    ("loss", "no named group"),
    ("(?P<a>(x+)+)", "nests repetitions"),
    ("(?P<a>(x|y)*z)*", "nests repetitions"),
    ("(?P<a>.+) (?P<b>[^ ]+) (?P<c>\\S*)", "wide classes"),
    ("(?P<a>x{2000})", "at most 1000"),
    ("(?P<a>" + "x" * 600 + ")", "characters"),
    ("(?P<a>", "not a valid regular expression"),
])
def test_dangerous_or_useless_patterns_are_refused(pattern: str, words: str) -> None:
    with pytest.raises(PatternError, match=words.replace("(", r"\(")):
        check_pattern(pattern)


def test_metrics_forms() -> None:
    assert parse_metrics({"preset": ["keras", "hf-trainer"], "patterns": "a=(?P<a>\\d+)",
                          "tensorboard": "./runs/"}) == {
        "patterns": [{"pattern": "a=(?P<a>\\d+)", "step": None}],
        "presets": ["keras", "hf-trainer"], "tensorboard": "runs"}
    with pytest.raises(PatternError, match="step 'b' must name"):
        parse_metrics({"pattern": "a=(?P<a>\\d+)", "step": "b"})
    with pytest.raises(PatternError, match="is empty"):
        parse_metrics([])
