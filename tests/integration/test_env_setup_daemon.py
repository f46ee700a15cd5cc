"""`env_setup: login` and `{conda: NAME}` through the real daemon, for a real unix user
whose own login files set their PATH. The login shell, and so the user's init files, run
as the user, never as root.

conda is not installed on the test machines: a stand-in `conda` script on the user's
PATH (from their ~/.profile) answers `conda shell.posix activate NAME` as conda does, so
what is tested is how nai finds conda and applies the activation it prints."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import Daemon, UnixUser, needs_root, wait_for  # type: ignore[import-not-found]

from nai_server.protocol import TERMINAL_STATES

pytestmark = [needs_root]
TERMINAL = TERMINAL_STATES

PROFILE = """PATH="$HOME/tools:$PATH"
export PATH
id -u > "$HOME/profile-ran-as"
"""
HELLO = "#!/bin/sh\necho \"hello from the user's tools\"\n"
FAKE_CONDA = """#!/bin/sh
# A stand-in for conda: only `conda shell.posix activate NAME`, printed as conda prints it.
[ "$1 $2" = "shell.posix activate" ] || { echo "fake conda: $*" >&2; exit 2; }
[ -d "$HOME/envs/$3" ] || {
    echo "EnvironmentNameNotFound: Could not find conda environment: $3" >&2; exit 1; }
echo "export CONDA_DEFAULT_ENV='$3'"
echo "export CONDA_PREFIX='$HOME/envs/$3'"
echo "export PATH='$HOME/envs/$3/bin':\\"\\$PATH\\""
"""
ENV_PYTHON = "#!/bin/sh\necho \"python of $CONDA_DEFAULT_ENV: $*\"\n"


def write(user: UnixUser, rel: str, text: str, mode: int = 0o644) -> None:
    """A file in the user's home, theirs (written by the test, as the user would)."""
    path = user.home / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    for part in [path, *path.relative_to(user.home).parents]:
        os.chown(user.home / part, user.uid, user.gid)


def run_job(daemon: Daemon, user: UnixUser, spec: dict) -> tuple[dict, str]:
    made = daemon.as_user(user, "POST", "/v1/jobs", {"spec": {"gpus": 0, **spec}})
    assert made.status == 201, made.body
    job_id = made.json()["id"]
    wait_for(lambda: daemon.as_user(user, "GET", f"/v1/jobs/{job_id}").json()["state"]
             in TERMINAL, what=f"job {job_id} to end")
    info = daemon.as_user(user, "GET", f"/v1/jobs/{job_id}").json()
    return info, daemon.as_user(user, "GET", f"/v1/jobs/{job_id}/logs").body.decode()


def a_user_with_tools(daemon: Daemon, make_user) -> UnixUser:
    user = make_user()
    assert daemon.admin("user", "add", user.name).returncode == 0
    write(user, ".profile", PROFILE)
    write(user, "tools/hello", HELLO, 0o755)
    return user


def test_login_runs_the_command_with_the_users_own_profile(daemon: Daemon, make_user) -> None:
    alice = a_user_with_tools(daemon, make_user)
    # By default a job gets the daemon's PATH: the user's profile is not read.
    plain, log = run_job(daemon, alice, {"command": "hello"})
    assert plain["state"] == "failed" and "hello from" not in log
    assert not (alice.home / "profile-ran-as").exists()

    job, log = run_job(daemon, alice, {"command": 'hello; echo "shell=$SHELL"',
                                       "env_setup": "login"})
    assert job["state"] == "succeeded", log
    assert "hello from the user's tools\n" in log and "shell=/bin/sh\n" in log
    ran_as = alice.home / "profile-ran-as"  # the profile ran as alice, not as root
    assert ran_as.read_text().strip() == str(alice.uid) and ran_as.stat().st_uid == alice.uid

    # A bash user's login shell is bash, which reads ~/.bash_profile first.
    subprocess.run(["usermod", "-s", "/bin/bash", alice.name], check=True)
    write(alice, ".bash_profile", '. "$HOME/.profile"\nexport FROM_BASH_PROFILE=yes\n')
    show = 'hello; echo "bash=$FROM_BASH_PROFILE ${BASH_VERSION:+is-bash}" "shell=$SHELL"'
    job, log = run_job(daemon, alice, {"command": show, "env_setup": "login"})
    assert job["state"] == "succeeded", log
    assert "hello from the user's tools\n" in log and "bash=yes is-bash" in log
    assert "shell=/bin/bash" in log


def test_conda_env_is_found_through_the_login_shell_and_activated(daemon: Daemon,
                                                                  make_user) -> None:
    bob = a_user_with_tools(daemon, make_user)
    write(bob, "tools/conda", FAKE_CONDA, 0o755)
    write(bob, "envs/demo/bin/python", ENV_PYTHON, 0o755)
    job, log = run_job(daemon, bob, {"command": 'python train.py --lr "0.1 x"; echo "$0"',
                                     "env_setup": {"conda": "demo"}})
    assert job["state"] == "succeeded", log
    # The activation's PATH and variables apply; the command itself runs in /bin/sh.
    assert "python of demo: train.py --lr 0.1 x\n/bin/sh\n" in log
    assert Path(bob.home / "profile-ran-as").read_text().strip() == str(bob.uid)

    missing, log = run_job(daemon, bob, {"command": "echo ran",
                                         "env_setup": {"conda": "nosuch"}})
    assert missing["state"] == "failed" and missing["exit_code"] == 127
    assert "could not activate the environment nosuch" in log
    assert "EnvironmentNameNotFound" in log and "ran" not in log

    os.unlink(bob.home / "tools" / "conda")  # no conda anywhere: the job says where to put it
    gone, log = run_job(daemon, bob, {"command": "echo ran", "env_setup": {"conda": "demo"}})
    assert gone["state"] == "failed" and "no conda found" in log and "ran" not in log
