"""`env_setup:` in the job spec: which environment, and so which `python`, a job runs in.

Without it a job runs under ``/bin/sh -c`` with the daemon's PATH (core.env), so
``python`` is whatever the daemon finds: the server's, not the user's. With it:

- ``login``: the command runs in the user's login shell (``SHELL -l -c``, the shell
  from the user's passwd entry when it is a POSIX shell, else ``/bin/bash``), which
  reads /etc/profile and the user's ``~/.profile`` or ``~/.bash_profile``, so the
  PATH, conda and pyenv set up there apply.
- ``{conda: NAME}``: the login shell finds ``conda`` (``$CONDA_EXE``, the PATH, then
  the usual install folders) and the command runs, with ``/bin/sh -c``, in the
  environment ``conda shell.posix activate NAME`` sets up: the activation conda's own
  ``conda activate`` does, activate.d scripts included. Chosen over ``conda run``,
  which puts a process of its own between the job and the signals nai sends it.
- ``{venv: PATH}``: ``PATH/bin`` goes first on the PATH and ``VIRTUAL_ENV`` is set,
  as ``source PATH/bin/activate`` would; a relative PATH is inside the job's code,
  ``~/`` is the user's home.

Everything here is a script and its arguments that the job's wrapper runs *as the
job's owner*: the daemon reads none of the user's files (their init files, their venv)
itself, and the user's command and names are arguments, never pasted into a script.
Pure: no I/O.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from nai_server.core.bounds import has_surrogate, shown

EnvSetup = str | dict[str, str]
FORMS = "login, {conda: NAME} or {venv: PATH}"
MAX_PATH_CHARS = 4096
CONDA_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}")
# Shells that take `-l -c` and read a profile; any other (fish, csh, nologin) gets bash.
POSIX_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh"})
FALLBACK_SHELL = "/bin/bash"


def parse_env_setup(value: object) -> EnvSetup:
    """Validate an ``env_setup`` value into ``"login"``, ``{"conda": NAME}`` or
    ``{"venv": PATH}`` (PATH normalised); ValueError says what is wrong."""
    if value == "login":
        return "login"
    if isinstance(value, str) and value in ("conda", "venv"):
        raise ValueError(f"{value} needs a value: write env_setup: {{{value}: ...}}")
    if isinstance(value, Mapping) and len(value) > 1:
        raise ValueError(f"takes one of login, conda or venv, got {len(value)} keys: "
                         f"{', '.join(shown(key) for key in list(value)[:4])}")
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ValueError(f"must be {FORMS}, e.g. env_setup: {{conda: torch}}, got {shown(value)}")
    (key, raw), = value.items()
    if key == "conda":
        return {"conda": _conda(raw)}
    if key == "venv":
        return {"venv": _venv(raw)}
    raise ValueError(f"must be {FORMS}, got a mapping with {shown(key)}")


def _conda(raw: Any) -> str:
    if isinstance(raw, str) and (CONDA_NAME_RE.fullmatch(raw) or (
            raw.startswith("/") and _clean_path(raw))):
        return posixpath.normpath(raw) if raw.startswith("/") else raw
    raise ValueError("conda: must be the name of one of your conda environments (letters, "
                     f"digits, '.', '_', '+', '-'; `conda env list` shows them) or its "
                     f"absolute path, got {shown(raw)}")


def _venv(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip() or not _clean_path(raw):
        raise ValueError("venv: must be the path of a virtualenv made with python -m venv: "
                         "relative to the job's code (e.g. .venv), absolute, or under ~/, "
                         f"got {shown(raw)}")
    if raw.startswith("~") and not (raw == "~" or raw.startswith("~/")):
        raise ValueError(f"venv: ~user is not supported; write the absolute path, "
                         f"got {shown(raw)}")
    if raw.startswith(("/", "~")):
        return posixpath.normpath(raw) if raw.startswith("/") else "~" + posixpath.normpath(
            raw[1:] or "/").rstrip("/")
    if ".." in raw.split("/"):
        raise ValueError(f"venv: a relative path must stay inside the job's code (no '..'); "
                         f"use an absolute path for a venv elsewhere, got {shown(raw)}")
    return posixpath.normpath(raw)


def _clean_path(raw: str) -> bool:
    return (len(raw) <= MAX_PATH_CHARS and not has_surrogate(raw)
            and not any(ord(c) < 32 or ord(c) == 127 for c in raw))


def login_shell(passwd_shell: str) -> str:
    """The shell `login` runs the command in: the user's own when it is a POSIX one."""
    name = posixpath.basename(passwd_shell or "")
    return passwd_shell if passwd_shell.startswith("/") and name in POSIX_SHELLS else (
        FALLBACK_SHELL)


def quote(word: str) -> str:
    """``word`` as one sh word."""
    return "'" + word.replace("'", "'\\''") + "'"


# Run as the job's owner, with VIRTUAL_ENV set: $1 = the command.
_VENV = """[ -x "$VIRTUAL_ENV/bin/python" ] || {
    echo "nai: env_setup venv: $VIRTUAL_ENV/bin/python not found: make the venv on this \
server first, as yourself: python3 -m venv $VIRTUAL_ENV" >&2
    exit 127
}
exec /bin/sh -c "$1"
"""
# The same for a relative venv path: that is inside this job's own code snapshot, which
# no later job sees, so making a venv there is the wrong advice; one under ~/ is right.
_VENV_IN_CODE = """[ -x "$VIRTUAL_ENV/bin/python" ] || {
    echo "nai: env_setup venv: $VIRTUAL_ENV/bin/python not found: a relative venv path \
is looked for in this job's own copy of your code (a .venv your .gitignore leaves out is \
not sent, and one made on your laptop rarely runs here); make a venv once on this \
server, as yourself: python3 -m venv ~/venvs/NAME, then write env_setup: \
{venv: ~/venvs/NAME}" >&2
    exit 127
}
exec /bin/sh -c "$1"
"""

# Run by the user's login shell (as them): $1 = the conda environment, $2 = the command.
_CONDA = r"""conda=
if [ -n "${CONDA_EXE:-}" ] && [ -x "$CONDA_EXE" ]; then conda=$CONDA_EXE; fi
if [ -z "$conda" ]; then
    found=$(command -v conda 2>/dev/null) || found=
    case $found in /*) conda=$found ;; esac
fi
if [ -z "$conda" ]; then
    for dir in "$HOME/miniforge3" "$HOME/miniconda3" "$HOME/anaconda3" "$HOME/mambaforge" \
            /opt/conda /opt/miniforge3 /opt/miniconda3 /opt/anaconda3; do
        if [ -x "$dir/bin/conda" ]; then conda=$dir/bin/conda; break; fi
    done
fi
if [ -z "$conda" ]; then
    echo "nai: env_setup conda: no conda found: put it on your PATH in ~/.profile (or \
~/.bash_profile), or install it in ~/miniconda3" >&2
    exit 127
fi
activate=$("$conda" shell.posix activate "$1") || {
    echo "nai: env_setup conda: $conda could not activate the environment $1; \
\`conda env list\` shows yours" >&2
    exit 127
}
eval "$activate" || exit 127
exec /bin/sh -c "$2"
"""


def job_launch(setup: EnvSetup | None, *, command: str, env: Mapping[str, str],
               code_dir: str, home: str, shell: str) -> tuple[str, tuple[str, ...],
                                                              dict[str, str]]:
    """(script, its arguments, environment) that run ``command`` in the environment
    ``setup`` asks for; the wrapper runs ``/bin/sh -c script /bin/sh args...`` as the
    job's owner. ``shell`` is the owner's shell from their passwd entry."""
    out = dict(env)
    if setup is None:
        return command, (), out
    if setup == "login":
        chosen = login_shell(shell)
        out["SHELL"] = chosen
        return f'exec {quote(chosen)} -l -c "$1"', (command,), out
    assert isinstance(setup, Mapping)
    if "conda" in setup:
        chosen = login_shell(shell)
        out["SHELL"] = chosen
        return (f'exec {quote(chosen)} -l -c {quote(_CONDA)} nai-conda "$1" "$2"',
                (setup["conda"], command), out)
    path, script = setup["venv"], _VENV
    if path.startswith("~"):
        path = posixpath.normpath(home.rstrip("/") + "/" + path[1:].lstrip("/"))
    elif not path.startswith("/"):
        path, script = posixpath.normpath(posixpath.join(code_dir, path)), _VENV_IN_CODE
    out["VIRTUAL_ENV"] = path
    out["PATH"] = f"{path}/bin:{out['PATH']}" if out.get("PATH") else f"{path}/bin"
    out.pop("PYTHONHOME", None)  # as bin/activate does: it would point python elsewhere
    return script, (command,), out
