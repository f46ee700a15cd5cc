"""The job spec's bounds: what a crafted spec could otherwise do to the daemon (issue 13).

Every number is bounded before anything stores it (a 64-bit overflow in the state file
stopped every later commit), YAML anchors and aliases are refused (a few hundred bytes
of nested aliases are a billion items), and no message quotes more than a few dozen
characters of a user's value."""

from __future__ import annotations

import pytest

from nai_server.core import spec as spec_module
from nai_server.core.bounds import MAX_ID, json_problem, shown
from nai_server.core.spec import SpecError, apply_overrides, parse_spec, spec_from_dict

BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]"
       for i in range(8)]
    + ["command: i"]) + "\n"


def test_a_yaml_alias_bomb_is_refused_naming_the_line() -> None:
    assert len(BOMB) < 600  # nine levels of nine: 387 million strings if expanded
    with pytest.raises(SpecError) as info:
        parse_spec(BOMB)
    assert info.value.line == 1
    assert "YAML anchors/aliases (&name, *name) are not allowed in nai.yaml" in str(info.value)


def test_an_alias_alone_is_refused_too() -> None:
    with pytest.raises(SpecError, match="anchors/aliases") as info:
        parse_spec("command: x\nname: *undefined\n")
    assert info.value.line == 2


@pytest.mark.parametrize("text", [
    "command: x\n" + "x" * spec_module.MAX_SPEC_CHARS,
    "command: x\nenv: " + "[" * 100 + "]" * 100 + "\n",
])
def test_huge_or_deep_specs_are_refused(text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(("field", "value", "expect"), [
    ("time_limit", "99999999999999999999d", "at most 366d"),
    ("time_limit", "367d", "at most 366d"),
    ("time_limit", "9" * 400 + "d", "duration"),
    ("time_limit", 10**30, "at most 366d"),
    ("gpu_memory", "2PiB", "at most 1PiB"),
    ("gpu_memory", "9" * 400 + "G", "size"),
    ("gpus", 1025, "from 0 to 1024"),
    ("gpus", 10**30, "from 0 to 1024"),
    ("gpus", "9" * 5000, "from 0 to 1024"),
    ("after", [MAX_ID + 1], "job id"),
    ("after_ok", "99999999999999999999999", "job id"),
    ("after", list(range(1, 1100)), "more than 1000"),
    ("dataset", "d@99999999999999999999", "out of range"),
    ("command", "x" * (spec_module.MAX_COMMAND_CHARS + 1), "limit"),
    ("command", "echo \ud800", "shell command"),
    ("env", {f"V{i}": "1" for i in range(300)}, "limit is 256"),
    ("env", {"A": "x" * 40_000}, "limit is"),
    ("env", {f"V{i}": "x" * 30_000 for i in range(5)}, "add up"),
    ("env", {"A" * 300: "1"}, "not a valid variable name"),
    ("env", {"A": "\udcff"}, "must be a string"),
])
def test_every_number_and_size_is_bounded(field: str, value: object, expect: str) -> None:
    with pytest.raises(SpecError, match=expect) as info:
        spec_from_dict({"command": "x", field: value})
    assert info.value.field == field
    assert len(str(info.value)) < 250  # the value is never echoed whole


def test_the_bounds_themselves_are_accepted() -> None:
    spec = spec_from_dict({"command": "x", "time_limit": "366d", "gpu_memory": "1PiB",
                           "gpus": 1024, "after": [MAX_ID]})
    assert (spec.time_limit, spec.gpu_memory, spec.gpus, spec.after) == (
        366 * 86400, 2**50, 1024, (MAX_ID,))


def test_overrides_are_bounded_too() -> None:
    with pytest.raises(SpecError, match="at most 366d"):
        apply_overrides(spec_from_dict({"command": "x"}), time_limit="99999999999999999999d")


def test_unknown_keys_and_bad_values_are_quoted_short() -> None:
    with pytest.raises(SpecError) as info:
        spec_from_dict({"command": "x", "k" * 100_000: 1})
    assert len(str(info.value)) < 500 and len(info.value.field or "") <= 80
    with pytest.raises(SpecError) as info:
        spec_from_dict({"command": "x", "priority": ["p" * 100_000] * 1000})
    assert len(str(info.value)) < 250
    with pytest.raises(SpecError) as info:
        parse_spec("command: x\ngpus: " + "9" * 5000 + "\n")
    assert len(str(info.value)) < 250


def test_a_lone_surrogate_in_the_text_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="UTF-8"):
        parse_spec("command: echo \ud800\n")


def test_a_control_character_in_the_text_is_a_spec_error() -> None:
    # YAML's reader refuses it while the loader is being made: that was a 500.
    with pytest.raises(SpecError, match=r"control character \(#x19\)"):
        parse_spec("command: echo \x19\n")


def test_shown_cuts_long_values_and_escapes_control_characters() -> None:
    assert shown("x" * 1000) == "'" + "x" * 78 + "…"
    assert shown("a\nb") == "'a\\nb'"
    assert len(shown(list(range(10**6)))) <= 80
    assert shown(10**5000) == "<int>"


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("value", "expect"), [
    ({"a": 2**53}, "out of range"),
    ({"a": float("nan")}, "not finite"),
    ({"a": "\ud800"}, "surrogate"),
    ({"\ud800": 1}, "not valid UTF-8"),
    ({"a": _nested(40)}, "nested"),
    ({"a": list(range(20_000))}, "keys and items"),
])
def test_free_json_is_bounded(value: object, expect: str) -> None:
    assert expect in (json_problem(value) or "")


def test_ordinary_free_json_passes() -> None:
    assert json_problem({"lineage": {"datasets": ["c@2"], "job": 12}, "acc": 0.9}) is None
