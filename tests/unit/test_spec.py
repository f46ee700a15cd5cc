from __future__ import annotations

import json

import pytest

from nai_server.core.spec import (
    JobSpec,
    SpecError,
    apply_overrides,
    parse_ref,
    parse_spec,
    spec_from_dict,
    spec_to_dict,
)

GiB = 1024**3

EXAMPLE = """\
name: cifar-resnet
command: python train.py --epochs 5      # run with /bin/sh -c in the code snapshot
gpus: 1                 # whole GPUs; 0 = CPU-only job
gpu_memory: 10GiB       # optional: at least this much free memory per GPU
dataset: cifar10@2      # optional, name[@version]
model: resnet18@latest  # optional base model
env: {SEED: "1", LR: 0.1, DEBUG: yes}
time_limit: 2h
priority: normal
register_model: cifar-resnet
after: [3, 4]
after_ok: 5
preemptible: true
group: vision-lab
"""


def test_design_example_parses() -> None:
    spec = parse_spec(EXAMPLE)
    assert spec == JobSpec(
        name="cifar-resnet",
        command="python train.py --epochs 5",
        gpus=1,
        gpu_memory=10 * GiB,
        dataset="cifar10@2",
        model="resnet18@latest",
        env={"SEED": "1", "LR": "0.1", "DEBUG": "true"},
        time_limit=7200,
        priority="normal",
        register_model="cifar-resnet",
        after=(3, 4),
        after_ok=(5,),
        preemptible=True,
        group="vision-lab",
    )


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_spec("command: python train.py\n")
    assert spec == JobSpec(command="python train.py")
    assert (spec.name, spec.gpus, spec.priority, spec.env) == ("", 1, "normal", {})
    assert (spec.gpu_memory, spec.time_limit, spec.after) == (None, None, ())
    assert spec.preemptible is False


def test_null_optional_fields_and_empty_env() -> None:
    spec = parse_spec("command: x\ngpu_memory:\ntime_limit: null\nenv:\nafter:\n")
    assert (spec.gpu_memory, spec.time_limit, spec.env, spec.after) == (None, None, {}, ())


def test_multiline_command() -> None:
    spec = parse_spec("command: |\n  pip list\n  python train.py\n")
    assert spec.command == "pip list\npython train.py\n"


def test_error_message_format() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("name: x\ncommand: python t.py\ngpus: two\n")
    err = info.value
    assert (err.field, err.line, err.source) == ("gpus", 3, "nai.yaml")
    assert str(err) == ("nai.yaml:3: gpus: must be a whole number from 0 to 1024 "
                        "(0 = CPU-only job), got 'two'")
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("line", "expect_in_message"),
    [
        ("name: 'bad name'", "letters, digits"),
        ("name: -leading-dash", "starting with a letter"),
        ("name: " + "a" * 65, "1-64"),
        ("gpus: -1", "from 0 to 1024"),
        ("gpus: 1.5", "whole number"),
        ("gpus: true", "whole number"),
        ("gpu_memory: lots", "10GiB"),
        ("gpu_memory: 0", "size"),
        ("gpu_memory: 1.5", "size"),
        ("gpu_memory: 40", "a bare number counts bytes"),
        ("gpu_memory: 512KiB", "a bare number counts bytes"),
        ("dataset: 'cifar 10'", "name@version"),
        ("dataset: cifar10@", "name@version"),
        ("dataset: cifar10@-2", "name@version"),
        ("model: [a, b]", "name@version"),
        ("env: [A, B]", "mapping"),
        ("env: {1BAD: x}", "not a valid variable name"),
        ("env: {NAI_JOB_ID: '3'}", "set by nai"),
        ("env: {CUDA_VISIBLE_DEVICES: '0'}", "set by nai"),
        ("env: {CUDA_DEVICE_ORDER: FASTEST_FIRST}", "set by nai"),
        ("env: {A: [1, 2]}", "quote it"),
        ("env: {A: null}", "quote it"),
        ("time_limit: soon", "duration"),
        ("time_limit: 0", "duration"),
        ("time_limit: 30m2h", "duration"),
        ("time_limit: 1.5", "duration"),
        ("priority: urgent", "low, normal, high"),
        ("register_model: 'my model'", "letters, digits"),
        ("after: [1, x]", "job id"),
        ("after_ok: 0", "job id"),
        ("after: {a: 1}", "job id"),
        ("preemptible: maybe", "true or false"),
        ("preemptible: 1", "true or false"),
        ("group: 'a/b'", "letters, digits"),
        ("command: ''", "shell command"),
        ("command: [python, t.py]", "shell command"),
    ],
)
def test_each_field_error_names_field_and_line(line: str, expect_in_message: str) -> None:
    field = line.split(":", 1)[0]
    text = f"# my job\ncommand: python train.py\n{line}\n"
    if field == "command":
        text = f"# my job\nname: ok\n{line}\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert info.value.field == field
    assert info.value.line == 3
    assert str(info.value).startswith(f"nai.yaml:3: {field}: ")
    assert expect_in_message in str(info.value)


def test_missing_command_says_what_to_write() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("name: x\ngpus: 1\n", source="jobs/a/nai.yaml")
    assert info.value.field == "command"
    assert info.value.line is None
    assert str(info.value).startswith("jobs/a/nai.yaml: command: is required")
    assert "command: python train.py" in str(info.value)


def test_unknown_key_suggests_the_closest_and_lists_allowed() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("command: x\ngpu: 2\n")
    message = str(info.value)
    assert info.value.field == "gpu"
    assert info.value.line == 2
    assert "unknown key 'gpu'" in message
    assert "did you mean 'gpus'?" in message
    assert "time_limit" in message and "register_model" in message


def test_unknown_key_without_a_close_match() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("command: x\nzzzzzz: 1\n")
    assert "did you mean" not in str(info.value)
    assert "allowed keys:" in str(info.value)


def test_duplicate_key_is_an_error() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("command: x\ngpus: 1\ngpus: 2\n")
    assert (info.value.field, info.value.line) == ("gpus", 3)
    assert "line 2" in str(info.value)


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    with pytest.raises(SpecError, match=r"^nai.yaml: is empty; write at least: command: "):
        parse_spec(text)


@pytest.mark.parametrize("text", ["- command: x\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    with pytest.raises(SpecError, match="must be a mapping") as info:
        parse_spec(text)
    assert info.value.line == 1


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(SpecError, match="not valid YAML") as info:
        parse_spec("command: x\ngpus: 1\nenv: {A: 1\n")
    assert info.value.line is not None and info.value.line >= 3
    with pytest.raises(SpecError, match="not valid YAML"):
        parse_spec("command: x\n\tgpus: 1\n")


def test_non_string_key_is_unknown() -> None:
    with pytest.raises(SpecError, match="unknown key 1"):
        parse_spec("command: x\n1: 2\n")


def test_numeric_names_are_kept_as_text() -> None:
    spec = parse_spec("command: x\nname: 2024\ndataset: 2024\n")
    assert (spec.name, spec.dataset) == ("2024", "2024")


def test_yaml_sexagesimal_time_limit_agrees_with_the_string_form() -> None:
    assert parse_spec("command: x\ntime_limit: 1:30:00\n").time_limit == 5400
    assert parse_spec("command: x\ntime_limit: '1:30:00'\n").time_limit == 5400
    assert parse_spec("command: x\ntime_limit: 1h30m\n").time_limit == 5400


def test_parse_ref() -> None:
    assert parse_ref("cifar10") == ("cifar10", None)
    assert parse_ref("cifar10@latest") == ("cifar10", None)
    assert parse_ref("cifar10@2") == ("cifar10", 2)
    for bad in ("cifar10@0", "@2", "a@b@c", "x@"):
        with pytest.raises(ValueError):
            parse_ref(bad)


def test_round_trip_through_json() -> None:
    spec = parse_spec(EXAMPLE)
    data = json.loads(json.dumps(spec_to_dict(spec)))
    assert spec_from_dict(data) == spec
    minimal = JobSpec(command="true")
    assert spec_from_dict(spec_to_dict(minimal)) == minimal


def test_spec_from_dict_validates_without_lines() -> None:
    with pytest.raises(SpecError) as info:
        spec_from_dict({"command": "x", "time_limit": "forever"})
    assert (info.value.field, info.value.line, info.value.source) == ("time_limit", None, "request")
    assert str(info.value).startswith("request: time_limit: ")
    with pytest.raises(SpecError, match="did you mean 'gpus'"):
        spec_from_dict({"command": "x", "gpsu": 1})
    with pytest.raises(SpecError, match="JSON object"):
        spec_from_dict(["command"])  # type: ignore[arg-type]


def test_overrides_from_cli_flags() -> None:
    spec = parse_spec("command: python t.py\nenv: {SEED: '1', LR: '0.1'}\ngpus: 1\n")
    new = apply_overrides(
        spec,
        gpus="2",
        time_limit="2h",
        env=["SEED=7", "EXTRA=a=b"],
        name="run-2",
        dataset="cifar10@3",
        model="resnet18",
        after="12,13",
    )
    assert new.gpus == 2
    assert new.time_limit == 7200
    assert new.env == {"SEED": "7", "LR": "0.1", "EXTRA": "a=b"}
    assert (new.name, new.dataset, new.model) == ("run-2", "cifar10@3", "resnet18")
    assert new.after == (12, 13)
    assert new.command == spec.command
    assert spec.gpus == 1  # the original is untouched


def test_overrides_none_means_not_given() -> None:
    spec = parse_spec("command: x\ngpus: 3\ntime_limit: 1h\n")
    assert apply_overrides(spec, gpus=None, time_limit=None, env=None) == spec


def test_overrides_env_as_mapping_and_single_string() -> None:
    spec = JobSpec(command="x", env={"A": "1"})
    assert apply_overrides(spec, env={"B": 2}).env == {"A": "1", "B": "2"}
    assert apply_overrides(spec, env="A=3").env == {"A": "3"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"gpus": "two"}, "gpus"),
        ({"time_limit": "soon"}, "time_limit"),
        ({"env": ["NOEQUALS"]}, "env"),
        ({"env": ["NAI_JOB_ID=1"]}, "env"),
        ({"env": 5}, "env"),
        ({"env": [5]}, "env"),
        ({"name": "bad name"}, "name"),
        ({"dataset": "x@y@z"}, "dataset"),
    ],
)
def test_bad_overrides_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        apply_overrides(JobSpec(command="x"), **overrides)
    assert info.value.field == field
    assert info.value.line is None
    assert str(info.value).startswith(f"command line: {field}: ")


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(SpecError, match="did you mean 'gpus'"):
        apply_overrides(JobSpec(command="x"), gpu=2)


def test_a_spec_may_set_the_array_index_but_no_other_nai_variable() -> None:
    assert parse_spec("command: x\nenv: {NAI_ARRAY_INDEX: 4}\n").env == {"NAI_ARRAY_INDEX": "4"}
    with pytest.raises(SpecError, match="NAI_ARRAY_JOB is set by nai"):
        parse_spec("command: x\nenv: {NAI_ARRAY_JOB: 4}\n")


def test_after_overrides_add_to_the_specs_jobs() -> None:
    spec = parse_spec("command: x\nafter: [3]\nafter_ok: 5\n")
    new = apply_overrides(spec, after=[4, 3], after_ok="6,7")
    assert new.after == (3, 4) and new.after_ok == (5, 6, 7)
    with pytest.raises(SpecError, match="job id"):
        apply_overrides(spec, after=[0])
