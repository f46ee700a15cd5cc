"""The metric summary a model version keeps: best and last per metric, the direction
given or guessed, and the bounded read of a job's metrics.jsonl behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nai_server.core.bounds import json_loads, json_problem, json_row
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


NESTED = b"[" * 20_000  # under the line caps; json.loads: RecursionError, no ValueError
DEEP = b'{"loss": ' + b"[" * 400 + b"]" * 400 + b"}"  # read, but the API cannot send it


def test_crafted_lines_are_skipped_like_malformed_ones(tmp_path: Path) -> None:
    first = json.dumps(ROWS[0]).encode() + b"\n"
    _write(tmp_path, [first, NESTED + b"\n", DEEP + b"\n", NESTED])
    assert mounts.last_metrics(tmp_path) == ROWS[0]
    assert mounts.metric_summary(tmp_path) == {
        "metrics": Summary().feed_all(ROWS[:1]).result(), "partial": False}
    assert json_row(NESTED) is None and json_row(DEEP) is None
    assert json_row(b'{"a": ' + b"[" * 31 + b"]" * 31 + b"}") is not None  # 32 levels
    with pytest.raises(ValueError, match="nested too deeply"):
        json_loads(NESTED)


def test_the_last_row_kept_is_one_the_metadata_can_store(tmp_path: Path) -> None:
    _write(tmp_path, [b'{"step": 1, "loss": 2}\n', b'{"step": 2, "loss": NaN, "lr": Infinity}\n'])
    assert mounts.last_metrics(tmp_path) == {"step": 2, "loss": None, "lr": None}
    for unstorable in (b'{"step": 3, "seen": 100000000000000000000000000000}',
                       b'{"step": 3, "\\ud800": 1}', b'{"step": 3, "x": "\\udfff"}'):
        _write(tmp_path, [b'{"step": 1, "loss": 2}\n', unstorable + b"\n"])
        assert mounts.last_metrics(tmp_path) == {"step": 1, "loss": 2}, unstorable


def test_what_a_summary_keeps_is_storable() -> None:
    rows = [{"step": 10**30, "loss": 1.0}, {"step": 2, "loss": 10**400, "\ud800": 1.0},
            {"step": 3, "loss": 0.5, "tokens": 10**20}]
    result = Summary().feed_all(rows).result()
    assert result["loss"] == {"best": 0.5, "best_step": 3, "last": 0.5, "last_step": 3,
                              "count": 2, "direction": "min"}
    assert result["tokens"]["best"] == 1e20 and "\ud800" not in result
    assert json_problem(result) is None
