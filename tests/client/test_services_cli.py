"""Services through the real `nai` command against a real personal daemon: a model
trained by a job and registered from its outputs is served with no code of the user's,
queried through `nai service forward`, updated, and stopped."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nai_server.testing import wait_for

BIN = Path(sys.executable).parent
EXAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "numpy-regression"
PERSONAL_GPUS = 1
ROWS = [[0.05 * i - j for i in range(20)] for j in range(3)]


def nai(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nai"), *args], env=env, capture_output=True,
                          text=True, timeout=180)


@pytest.fixture(scope="module")
def served(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Model `reg` version 1 from a job's outputs, served as `reg`; its files pulled."""
    folder = tmp_path_factory.mktemp("job") / "numpy-regression"
    shutil.copytree(EXAMPLE, folder)
    trained = nai(env, "submit", str(folder), "--register-model", "reg", "--follow")
    assert trained.returncode == 0, trained.stderr
    try:
        serve = nai(env, "serve", "reg@1", "--name", "reg", "--gpus", "0", "--wait", "--json")
        assert serve.returncode == 0, serve.stderr
        assert json.loads(serve.stdout)["state"] == "ready"
        pulled = tmp_path_factory.mktemp("model") / "reg"
        assert nai(env, "model", "pull", "reg@1", "--to", str(pulled)).returncode == 0
        yield pulled
    finally:  # a replica outlives its daemon (`nai down`): stop it whatever happened
        nai(env, "service", "stop", "reg")


def _direct(model_dir: Path, rows: list[list[float]]) -> object:
    """What the model's predict.py answers when called by hand."""
    out = subprocess.run(
        [sys.executable, "-c", "import json, sys, predict; predict.load(sys.argv[1]); "
         "print(json.dumps(predict.predict(json.loads(sys.argv[2]))))",
         str(model_dir), json.dumps(rows)], cwd=model_dir, check=True, capture_output=True,
        text=True)
    return json.loads(out.stdout)


def test_services_lists_the_service_ready(env: dict[str, str], served: Path) -> None:
    listed = json.loads(nai(env, "services", "--json").stdout)
    assert [(s["name"], s["model"], s["state"]) for s in listed] == [("reg", "reg@1", "ready")]
    table = nai(env, "services")
    assert table.returncode == 0
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "MODEL", "STATE", "READY"]
    assert row.split()[:4] == ["reg", "reg@1", "ready", "1/1"]


def test_forward_answers_what_predict_computes(env: dict[str, str], served: Path) -> None:
    forward = subprocess.Popen([str(BIN / "nai"), "service", "forward", "reg", "--port", "0"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert forward.stdout is not None
        url = forward.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), forward.stderr.read()  # type: ignore[union-attr]
        answer = httpx.post(f"{url}/predict", json={"inputs": ROWS}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"outputs": _direct(served, ROWS)}
        health = httpx.get(f"{url}/health", timeout=60)
        assert health.status_code == 200
        bad = httpx.post(f"{url}/predict", content=b"nope", timeout=60)
        assert bad.status_code == 400 and "not JSON" in bad.json()["error"]["message"]
    finally:
        forward.terminate()
        forward.wait(30)
    shown = json.loads(nai(env, "service", "show", "reg", "--json").stdout)
    assert shown["stats"]["requests"] >= 3


def test_show_and_logs_say_what_the_replica_does(env: dict[str, str], served: Path) -> None:
    shown = nai(env, "service", "show", "reg")
    assert shown.returncode == 0 and shown.stdout.startswith("service reg: reg@1, ready")
    assert "REPLICA" in shown.stdout
    logs = nai(env, "service", "logs", "reg")
    assert logs.returncode == 0 and "reg@1 loaded" in logs.stdout, logs.stderr
    refused = nai(env, "service", "logs", "reg", "--json")
    assert refused.returncode == 2


def test_tokens_are_shown_once_listed_and_revoked(env: dict[str, str], served: Path) -> None:
    made = nai(env, "service", "token", "create", "reg", "--label", "ci", "--json")
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    assert token["token"] and token["label"] == "ci"
    listed = json.loads(nai(env, "service", "token", "list", "reg", "--json").stdout)
    assert [(t["id"], t["token"]) for t in listed] == [(token["id"], None)]
    assert nai(env, "service", "token", "revoke", "reg", token["id"]).returncode == 0
    assert json.loads(nai(env, "service", "token", "list", "reg", "--json").stdout) == []


def test_update_rolls_to_a_new_version(env: dict[str, str], served: Path) -> None:
    pushed = nai(env, "model", "push", "reg", str(served), "--allow-same")
    assert pushed.returncode == 0, pushed.stderr
    updated = nai(env, "service", "update", "reg", "--model", "reg@2", "--wait", "--json")
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["model"] == "reg@2"
    wait_for(lambda: {r["model"] for r in json.loads(nai(
        env, "service", "show", "reg", "--json").stdout)["replica_info"]} == {"reg@2"},
        timeout=60, what="the old replica gone")


def test_mistakes_say_what_to_do(env: dict[str, str], served: Path) -> None:
    missing = nai(env, "service", "show", "nope")
    assert missing.returncode == 3 and missing.stdout == "" and "nope" in missing.stderr
    unknown_model = nai(env, "serve", "nosuchmodel@1", "--name", "x", "--gpus", "0")
    assert unknown_model.returncode == 3, unknown_model.stderr
    nothing = nai(env, "service", "update", "reg")
    assert nothing.returncode == 2 and "give --model" in nothing.stderr
    bad_name = nai(env, "serve", "reg@1", "--name", "my service")
    assert bad_name.returncode == 2, bad_name.stderr
    assert "--name 'my service': use letters, digits" in bad_name.stderr
    assert "Traceback" not in bad_name.stderr
    too_many = nai(env, "service", "scale", "reg", "--replicas", "100")
    assert too_many.returncode == 2 and "--replicas" in too_many.stderr
    bad_timeout = nai(env, "serve", "reg@1", "--idle-timeout", "soon")
    assert bad_timeout.returncode == 2 and "not a duration" in bad_timeout.stderr


def test_stop_frees_the_service(env: dict[str, str], served: Path) -> None:
    stopped = nai(env, "service", "stop", "reg", "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["state"] == "stopped"
