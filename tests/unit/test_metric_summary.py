"""The metric summary a model version keeps: best and last per metric, the direction
given or guessed, and the bounded read of a job's metrics.jsonl behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nai_server.core.metric_summary import (
    Summary,
    check_metric_choice,
    guess_direction,
    headline,
)
from nai_server.host import mounts

ROWS = [{"step": 1, "time": 10.0, "loss": 2.0, "acc": 0.2, "phase": "train"},
        {"step": 2, "time": 11.0, "loss": 0.5, "acc": 0.9, "ok": True},
        {"step": 3, "time": 12.0, "loss": 0.9, "acc": 0.7, "bad": float("nan")}]


@pytest.mark.parametrize(("name", "direction"), [
    ("loss", "min"), ("val_loss", "min"), ("Error_rate", "min"), ("perplexity", "min"),
    ("val_ppl", "min"), ("mse", "min"), ("accuracy", "max"), ("f1", "max"), ("bleu", "max")])
def test_the_direction_is_guessed_from_the_name(name: str, direction: str) -> None:
    assert guess_direction(name) == direction


def test_best_and_last_follow_each_direction() -> None:
    result = Summary().feed_all(ROWS).result()
    assert result == {
        "loss": {"best": 0.5, "best_step": 2, "last": 0.9, "last_step": 3, "count": 3,
                 "direction": "min"},
        "acc": {"best": 0.9, "best_step": 2, "last": 0.7, "last_step": 3, "count": 3,
                "direction": "max"}}
    # Strings, booleans, non-finite values, step and time are not metrics.


def test_a_given_direction_wins_over_the_guess() -> None:
    result = Summary({"loss": "max", "acc": "min"}).feed_all(ROWS).result()
    assert (result["loss"]["best"], result["acc"]["best"]) == (2.0, 0.2)


def test_the_metric_choice_is_checked() -> None:
    assert check_metric_choice(None, None) == {}
    assert check_metric_choice("val_ppl", None) == {"val_ppl": "min"}
    assert check_metric_choice("reward", "min") == {"reward": "min"}
    with pytest.raises(ValueError, match="--metric"):
        check_metric_choice(None, "max")
    summary = Summary().feed_all(ROWS).result()
    assert headline(summary, "acc") == {"name": "acc", **summary["acc"]}
    assert headline(summary, "missing") is None


def test_names_are_bounded() -> None:
    rows = [{f"m{i}": 1.0 for i in range(500)}, {"x" * 500: 1.0}]
    assert len(Summary().feed_all(rows).result()) == 100


def _write(job_dir: Path, lines: list[bytes]) -> None:
    job_dir.mkdir(exist_ok=True)
    (job_dir / "metrics.jsonl").write_bytes(b"".join(lines))


def test_the_file_is_read_line_by_line_skipping_what_is_not_a_row(tmp_path: Path) -> None:
    lines = [json.dumps(r).encode() + b"\n" for r in ROWS]
    junk = [b"not json\n", b"[1, 2]\n", b"{\"loss\": " + b"9" * 70_000 + b"}\n", b"\n"]
    _write(tmp_path, [lines[0], *junk, lines[1], lines[2].rstrip(b"\n")])  # no last newline
    got = mounts.metric_summary(tmp_path)
    assert got == {"metrics": Summary().feed_all(ROWS).result(), "partial": False}
    assert mounts.metric_summary(tmp_path / "nowhere") == {"metrics": {}, "partial": False}


def test_a_long_file_is_summed_up_from_its_end(tmp_path: Path) -> None:
    early = [json.dumps({"step": i, "loss": 0.01}).encode() + b"\n" for i in range(2000)]
    late = [json.dumps({"step": 9000 + i, "loss": 1.0 + i}).encode() + b"\n" for i in range(3)]
    # A line that is no row, whose end alone would read as one.
    cut = b'{"loss": -7.0, "step": 5}\n'
    _write(tmp_path, [*early, b'{"x": 0} ' + cut, *late])
    got = mounts.metric_summary(tmp_path, limit=sum(map(len, late)) + len(cut))
    assert got["partial"] is True
    # The cut first line is skipped, not read as a row.
    assert got["metrics"]["loss"] == {"best": 1.0, "best_step": 9000, "last": 3.0,
                                      "last_step": 9002, "count": 3, "direction": "min"}


def test_a_metrics_link_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"loss": 1}\n')
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "metrics.jsonl").symlink_to(secret)
    assert mounts.metric_summary(job_dir) == {"metrics": {}, "partial": False}
