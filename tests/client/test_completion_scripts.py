"""`nai completion bash|zsh|fish` (issue 17, item 12): each script knows every command,
verb and option of `nai`'s parser, and completes them in a real shell where the shell
is installed (bash always is; zsh and fish are skipped without them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nai_tui import cli
from nai_tui.cli.completion import SHELLS

# (words before the cursor, the word being typed) → what must be offered
CASES = [
    ([], "", {"submit", "jobs", "dataset", "model", "server", "completion"}),
    ([], "da", {"dataset"}),
    (["dataset"], "", {"push", "list", "show", "pull", "rm", "tag", "share", "unshare"}),
    (["-s", "lab", "server"], "", {"add", "remove", "rm", "default", "trust", "list"}),
    (["-s", "dataset"], "", {"submit", "jobs"}),  # a server named dataset: not the command
    (["server", "add", "x", "y", "--transport"], "", {"ssh", "openssh"}),
    (["jobs"], "--st", {"--state"}),
    (["model", "push"], "--fin", {"--finetune-command"}),
    (["-s"], "", {"lab", "gpu-box"}),  # configured servers, from `nai server list`
    (["--server"], "gp", {"gpu-box"}),
    (["server", "rm"], "", {"lab", "gpu-box"}),
    (["server", "trust"], "", {"lab", "gpu-box"}),
]
DRIVERS = {
    "bash": ('source {script}\nt() {{ COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); '
             '_nai; echo "${{COMPREPLY[*]}}"; }}\n'),
    "zsh": ("compdef() {{ : }}\ncompadd() {{ [[ $1 == -- ]] && shift; print -r -- \"$*\" }}\n"
            "_files() {{ print }}\nsource {script}\n"
            "t() {{ words=(\"$@\"); CURRENT=${{#words}}; _nai }}\n"),
    "fish": "source {script}\nfunction t\n    complete -C \"$argv\" | cut -f1\nend\n",
}


BIN = Path(sys.executable).parent


def _script(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert cli.main(["completion", shell]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("shell", SHELLS)
def test_script_names_every_command(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = _script(shell, capsys)
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "subcommand").choices
    assert len(commands) > 10
    for name, sub in commands.items():
        assert name in text, name
        for option in sub._option_string_actions:
            if sub._option_string_actions[option].help != "==SUPPRESS==":
                assert option.lstrip("-") in text, (name, option)


@pytest.mark.parametrize("shell", SHELLS)
def test_script_completes_in_the_shell(shell: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    program = shutil.which(shell)
    if program is None:
        pytest.skip(f"{shell} is not installed here")
    script = tmp_path / f"nai.{shell}"
    script.write_text(_script(shell, capsys))
    driver = DRIVERS[shell].format(script=script)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    for name in ("lab", "gpu-box"):
        added = subprocess.run([str(BIN / "nai"), "server", "add", name, f"ssh://me@{name}"],
                               env=env, capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
    for before, typed, wanted in CASES:
        if shell == "fish":
            call = "t " + repr(" ".join(["nai", *before, typed]))
        else:
            call = "t " + " ".join(["nai", *before, repr(typed)])
        run = subprocess.run([program, "-c" if shell != "zsh" else "-fc", driver + call],
                             env=env, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        offered = set(run.stdout.split())
        assert wanted <= offered, (before, typed, offered)
        if typed:  # only words that begin with what was typed (zsh's compadd filters)
            assert shell == "zsh" or all(w.startswith(typed) for w in offered), offered
