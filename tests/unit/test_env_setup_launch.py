"""env_setup's pure half: values are normalised and survive a round trip through the
stored spec, and the scripts it builds carry the user's command as an argument only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nai_server.core.env_setup import job_launch, login_shell, quote
from nai_server.core.spec import apply_overrides, parse_spec, spec_from_dict, spec_to_dict

BASE = {"PATH": "/usr/bin:/bin", "PYTHONHOME": "/elsewhere", "HOME": "/home/alice"}


@pytest.mark.parametrize(("text", "value"), [
    ("login", "login"),
    ("{conda: torch-2.1}", {"conda": "torch-2.1"}),
    ("{conda: /opt/envs/x/}", {"conda": "/opt/envs/x"}),
    ("{venv: ./.venv/}", {"venv": ".venv"}),
    ("{venv: envs//a/./b}", {"venv": "envs/a/b"}),
    ("{venv: ~/venvs/torch/}", {"venv": "~/venvs/torch"}),
    ("{venv: /srv/../opt/v}", {"venv": "/opt/v"}),
])
def test_values_are_normalised_and_survive_a_round_trip(text: str, value: object) -> None:
    spec = parse_spec(f"command: python train.py\nenv_setup: {text}\n")
    assert spec.env_setup == value
    assert spec_from_dict(spec_to_dict(spec)) == spec
    assert apply_overrides(spec, env_setup="login").env_setup == "login"
    assert parse_spec("command: x\n").env_setup is None


def test_a_venv_path_is_resolved_against_the_code_or_the_home() -> None:
    def venv(path: str) -> dict[str, str]:
        _, _, env = job_launch({"venv": path}, command="python", env=BASE,
                               code_dir="/state/jobs/7/code", home="/home/alice", shell="/bin/sh")
        return env
    assert venv(".venv")["VIRTUAL_ENV"] == "/state/jobs/7/code/.venv"
    assert venv("~/v")["VIRTUAL_ENV"] == "/home/alice/v"
    assert venv("~")["VIRTUAL_ENV"] == "/home/alice"
    env = venv("/opt/v")
    assert env["VIRTUAL_ENV"] == "/opt/v" and env["PATH"] == "/opt/v/bin:/usr/bin:/bin"
    assert "PYTHONHOME" not in env


@pytest.mark.parametrize(("passwd", "used"), [
    ("/bin/bash", "/bin/bash"), ("/usr/bin/zsh", "/usr/bin/zsh"), ("/bin/sh", "/bin/sh"),
    ("/usr/bin/fish", "/bin/bash"), ("/usr/sbin/nologin", "/bin/bash"), ("bash", "/bin/bash"),
    ("", "/bin/bash"),
])
def test_the_login_shell_is_the_users_when_it_is_a_posix_one(passwd: str, used: str) -> None:
    assert login_shell(passwd) == used


@pytest.mark.parametrize("setup", [None, "login", {"venv": "/tmp"}, {"conda": "x"}])
def test_the_command_is_an_argument_never_part_of_the_script(setup: object,
                                                            tmp_path: Path) -> None:
    command = """printf '%s|' "it's" '$HOME' $((1+1)) "$0" """
    script, args, _ = job_launch(setup, command=command, env=BASE,  # type: ignore[arg-type]
                                 code_dir="/c", home="/h", shell="/bin/sh")
    if setup is None:
        assert (script, args) == (command, ())
        return
    other, _, _ = job_launch(setup, command="true", env=BASE,  # type: ignore[arg-type]
                             code_dir="/c", home="/h", shell="/bin/sh")
    assert script == other and args[-1] == command
    if setup == "login":  # run it as the wrapper does: the words arrive unchanged
        done = subprocess.run(["/bin/sh", "-c", script, "/bin/sh", *args],
                              capture_output=True, text=True, env={"HOME": str(tmp_path)})
        assert done.stdout == "it's|$HOME|2|/bin/sh|", done.stderr


def test_a_quoted_word_reads_back_unchanged() -> None:
    word = """it's "$HOME" `id` \\ $(true) '"""
    done = subprocess.run(["/bin/sh", "-c", f"printf %s {quote(word)}"], capture_output=True,
                          text=True, check=True)
    assert done.stdout == word
