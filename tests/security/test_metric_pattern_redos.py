"""A job's log lines cannot stall the root daemon's metrics reader: every pattern, the
presets' and the user's, runs on a linear-time engine, and the shapes that engine
lacks are refused at submit with a message.

The lines below took a backtracking matcher over a minute each (the keras and Rich
presets' number pattern could split a run of digits many ways inside a repetition);
they are matched here in a child process that must finish within a generous bound, so
a regression shows as a failure, not as a hung test run."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from nai_server.core.metric_patterns import PatternError, check_pattern, parse_metrics

ATTACK = textwrap.dedent(r'''
    from nai_server.core.metric_patterns import Matcher, MatchState, parse_metrics
    keras = "1/1" + (" - a: " + "1" * 30) * 28 + "!"
    rich = "  " + ("a: " + "1" * 30 + " ") * 25 + "!"
    rich_head = "Epoch 1/2 x 4/4 0:00:00 y 5it/s train_loss: 0.2"
    lightning = ("Epoch 1:   100%" + "|1/1 [" * 100 + ", " * 200 + "a=1")[:1024]
    user = "a" * 1023 + "!"
    matcher = Matcher(parse_metrics([
        {"preset": "keras"}, {"preset": "lightning-progress"}, {"preset": "hf-trainer"},
        "(?P<x>(?:a|a)*)b", r"(?P<d>\d*\d*)(?P<e>\d*\d*)!", "(?P<w>.*.*)#"]))
    lines = [keras, rich_head, rich, lightning, user, "1" * 1023 + "?"] * 20
    print(len(matcher.points(lines, MatchState())))
''')


def test_lines_built_to_backtrack_are_matched_at_once() -> None:
    done = subprocess.run([sys.executable, "-c", ATTACK], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().isdigit()


@pytest.mark.parametrize("pattern", [
    r"(?<=loss )(?P<loss>[\d.]+)",  # lookbehind
    r"(?P<loss>[\d.]+)(?= ms)",  # lookahead
    r"(?P<a>\d)(?P=a)",  # backreference
    r"(?>(?P<a>\d+))",  # atomic group
])
def test_what_a_linear_engine_cannot_do_is_refused_with_a_reason(pattern: str) -> None:
    with pytest.raises(PatternError, match="RE2"):
        check_pattern(pattern)


def test_crafted_metrics_values_are_refused_not_crashed_on() -> None:
    for value in ({"preset": [[1]]}, [{"preset": {"a": 1}}]):
        with pytest.raises(PatternError, match="unknown preset"):
            parse_metrics(value)
    with pytest.raises(PatternError, match="at most"):
        parse_metrics({"patterns": [r"x(?P<a>\d)"] * 2000})
