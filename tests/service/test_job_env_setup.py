"""`env_setup: {venv: PATH}` through the in-process API and real job processes: a venv
made with `python -m venv` gives the job its `python`; bad values are refused at submit.
(`login` and `conda`, which need a user's own login files, are tested through the real
daemon in tests/integration/test_env_setup_daemon.py.)"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.app.use_cases import UseCases
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import pack, tick_until

TERMINAL = TERMINAL_STATES
SHOW = ('python -c "import os, sys; print(\'prefix\', sys.prefix); '
        'print(\'venv\', os.environ.get(\'VIRTUAL_ENV\'))"')


def make_venv(where: Path, *copies: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", *copies, str(where)],
                   check=True)
    return where


def upload_dir(api: TestClient, root: Path) -> str:
    """Send a folder (files with their modes, links as links) as a code tree."""
    entries, blobs = [], {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            entries.append({"path": rel, "kind": "symlink", "target": os.readlink(path),
                            "size": 0, "sha256": ""})
        elif path.is_file():
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            blobs[digest] = data
            entries.append({"path": rel, "size": len(data), "sha256": digest,
                            "mode": path.stat().st_mode & 0o777})
    assert api.post("/v1/blobs", content=pack(blobs)).status_code == 201
    tree = api.post("/v1/trees", json={"entries": entries})
    assert tree.status_code == 201, tree.text
    return str(tree.json()["id"])


def run(api: TestClient, service: UseCases, spec: dict, code_tree: str | None = None) -> dict:
    made = api.post("/v1/jobs", json={"spec": {"gpus": 0, **spec}, "code_tree": code_tree})
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    tick_until(service, lambda: api.get(f"/v1/jobs/{job_id}").json()["state"] in TERMINAL,
               what=f"job {job_id} to end")
    info = api.get(f"/v1/jobs/{job_id}").json()
    info["log"] = api.get(f"/v1/jobs/{job_id}/logs").text
    return info


def test_a_venv_in_the_jobs_code_gives_it_its_python(api: TestClient, service: UseCases,
                                                    tmp_path: Path) -> None:
    code = tmp_path / "code"
    make_venv(code / ".venv", "--copies")  # a copy, not a link out of the folder
    (code / "nai.yaml").write_text("command: x\n")
    job = run(api, service, {"command": SHOW, "env_setup": {"venv": "./.venv/"}},
              upload_dir(api, code))
    assert job["state"] == "succeeded", job["log"]
    where = f"{service.runtime.job_dir(job['id'])}/code/.venv"
    assert f"prefix {where}\n" in job["log"] and f"venv {where}\n" in job["log"]
    assert job["spec"]["env_setup"] == {"venv": ".venv"}


def test_an_absolute_venv_gives_the_job_its_python(api: TestClient, service: UseCases,
                                                  tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "envs" / "torch")
    job = run(api, service, {"command": SHOW + "; command -v python",
                             "env_setup": {"venv": str(venv)}})
    assert job["state"] == "succeeded", job["log"]
    assert f"prefix {venv}\n" in job["log"] and f"venv {venv}\n" in job["log"]
    assert f"{venv}/bin/python\n" in job["log"]
    # Without env_setup, the same command gets the daemon's python, not the venv's.
    plain = run(api, service, {"command": SHOW})
    assert plain["state"] == "succeeded" and f"prefix {venv}" not in plain["log"]


def test_a_missing_venv_fails_the_job_saying_so(api: TestClient, service: UseCases,
                                                tmp_path: Path) -> None:
    job = run(api, service, {"command": "echo ran", "env_setup": {"venv": str(tmp_path / "no")}})
    assert job["state"] == "failed" and job["exit_code"] == 127
    assert f"{tmp_path}/no/bin/python not found" in job["log"] and "ran" not in job["log"]
    assert job["message"].startswith("exit code 127: most often a command was not found, "
                                      "the job's or one its env_setup needs (its log says "
                                      "which)")


def test_a_missing_relative_venv_advises_one_under_home(api: TestClient,
                                                       service: UseCases) -> None:
    # Not "make it in jobs/N/code/.venv": that snapshot is this job's alone.
    job = run(api, service, {"command": "echo ran", "env_setup": {"venv": ".venv"}})
    assert job["state"] == "failed" and job["exit_code"] == 127
    where = f"{service.runtime.job_dir(job['id'])}/code/.venv"
    assert f"{where}/bin/python not found: a relative venv path" in job["log"], job["log"]
    assert "python3 -m venv ~/venvs/NAME, then write env_setup: {venv: ~/venvs/NAME}" in (
        job["log"])
    assert f"venv {where}" not in job["log"] and "ran" not in job["log"]


@pytest.mark.parametrize(("value", "says"), [
    ({"venv": "../elsewhere"}, "stay inside the job's code"),
    ({"venv": "envs/../../x"}, "stay inside the job's code"),
    ({"venv": "~bob/venv"}, "~user is not supported"),
    ({"venv": ""}, "virtualenv"),
    ({"venv": "a\nb"}, "virtualenv"),
    ({"conda": "my env"}, "conda environments"),
    ({"conda": "$(id)"}, "conda environments"),
    ({"conda": "torch", "venv": ".venv"}, "one of login, conda or venv"),
    ({"pyenv": "3.11"}, "must be login"),
    ("conda", "needs a value"),
    ("bash", "must be login"),
    (True, "must be login"),
])
def test_bad_env_setup_is_refused_at_submit(api: TestClient, value: object, says: str) -> None:
    bad = api.post("/v1/jobs", json={"spec": {"command": "true", "env_setup": value}})
    assert bad.status_code == 400, bad.text
    message = bad.json()["error"]["message"]
    assert "env_setup" in message and says in message, message


def test_a_bad_env_setup_in_nai_yaml_names_its_line(api: TestClient) -> None:
    text = "command: echo hi\nenv_setup:\n  venv: ../outside\n"
    bad = api.post("/v1/jobs", json={"spec_yaml": text})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"].startswith("nai.yaml:2: env_setup: venv: a relative")
    good = api.post("/v1/jobs", json={"spec_yaml": "command: echo hi\nenv_setup: login\n"})
    assert good.status_code == 201 and good.json()["spec"]["env_setup"] == "login"
