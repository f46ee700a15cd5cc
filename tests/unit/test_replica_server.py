"""The zero-code replica server, as the daemon runs it: `python -m
nai_server.serving.replica` in its own process, answering real HTTP on a real unix
socket, with a `predict.py` written for each test."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from nai_server.testing import wait_for

ROOT = Path(__file__).resolve().parents[2]

DOUBLER = """
import os, json
from pathlib import Path

STATE = {}

def load(model_dir):
    gate = os.environ.get("TEST_LOAD_GATE")
    if gate:
        import time
        while not Path(gate).exists():
            time.sleep(0.01)
    STATE["factor"] = json.loads((Path(model_dir) / "factor.json").read_text())

def predict(inputs):
    if inputs == "boom":
        raise ValueError("inputs must be numbers, got 'boom'")
    gate = os.environ.get("TEST_PREDICT_GATE")
    if inputs == "wait" and gate:
        import time
        while not Path(gate).exists():
            time.sleep(0.01)
        return "waited"
    return [x * STATE["factor"] for x in inputs]
"""

BATCHER = DOUBLER + """
def predict_batch(batch):
    with open(os.environ["TEST_BATCH_LOG"], "a") as log:
        log.write(json.dumps(len(batch)) + "\\n")
    return [predict(x) for x in batch]
"""


class Replica:
    """A replica process and an HTTP client on its socket."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: Path, client: httpx.Client,
                 model_dir: Path) -> None:
        self.proc, self.sock, self.client, self.model_dir = proc, sock, client, model_dir

    def stderr(self) -> str:
        self.proc.terminate()
        return self.proc.communicate(timeout=20)[1].decode()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nai-rep-", dir="/tmp"))  # socket paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start(short_dir: Path) -> Iterator[Any]:
    started: list[Replica] = []

    def _start(source: str | None = DOUBLER, *, wait_ready: bool = True,
               model_dir: Path | None = None, **env: str) -> Replica:
        if model_dir is None:
            model_dir = short_dir / f"model{len(started)}"
            model_dir.mkdir()
            if source is not None:
                (model_dir / "predict.py").write_text(textwrap.dedent(source))
            (model_dir / "factor.json").write_text("3")
            (model_dir / "metadata.json").write_text(json.dumps({"framework": "plain"}))
        sock = short_dir / f"r{len(started)}.sock"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "NAI_MODEL_DIR": str(model_dir),
                    "NAI_SERVE_SOCKET": str(sock), "NAI_MODEL": "doubler@3",
                    "NAI_SERVICE": "dbl", "NAI_REPLICA": "1",
                    "NAI_MODEL_METADATA": json.dumps({"job": 12}), **env}
        proc = subprocess.Popen([sys.executable, "-m", "nai_server.serving.replica"],
                                env=full_env, cwd=short_dir, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)),
                              base_url="http://replica", timeout=30)
        replica = Replica(proc, sock, client, model_dir)
        started.append(replica)
        wait_for(lambda: sock.exists() or proc.poll() is not None, what="the socket")
        if wait_ready:
            wait_for(lambda: _status(client, "/health") == 200, what="the model loaded")
        return replica

    yield _start
    for r in started:
        r.client.close()
        if r.proc.poll() is None:
            r.proc.kill()
        r.proc.communicate()


def _status(client: httpx.Client, path: str) -> int | None:
    try:
        return client.get(path).status_code
    except httpx.TransportError:
        return None


def test_predict_answers_what_predict_returns(start: Any) -> None:
    replica = start()
    response = replica.client.post("/predict", json={"inputs": [1, 2.5]})
    assert response.status_code == 200
    assert response.json() == {"outputs": [3, 7.5]}


def test_errors_are_json_and_say_what_went_wrong(start: Any) -> None:
    replica = start()
    boom = replica.client.post("/predict", json={"inputs": "boom"})
    assert boom.status_code == 500
    assert "ValueError: inputs must be numbers" in boom.json()["error"]["message"]
    bad = replica.client.post("/predict", content=b"{not json")
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]["message"]
    missing = replica.client.post("/predict", json={"input": [1]})
    assert missing.status_code == 400 and '"inputs"' in missing.json()["error"]["message"]
    # The replica still serves after all that.
    assert replica.client.post("/predict", json={"inputs": [1]}).json() == {"outputs": [3]}


def test_health_is_503_until_loaded_and_metadata_names_the_version(
        start: Any, short_dir: Path) -> None:
    gate = short_dir / "load-gate"
    replica = start(wait_ready=False, TEST_LOAD_GATE=str(gate))
    wait_for(lambda: _status(replica.client, "/health") is not None, what="an answer")
    assert replica.client.get("/health").status_code == 503
    assert replica.client.post("/predict", json={"inputs": [1]}).status_code == 503
    gate.touch()
    wait_for(lambda: _status(replica.client, "/health") == 200, what="the model loaded")
    meta = replica.client.get("/metadata").json()
    assert (meta["name"], meta["version"]) == ("doubler", "3")
    assert (meta["service"], meta["replica"]) == ("dbl", "1")
    assert meta["lineage"] == {"job": 12}
    assert meta["files_metadata"] == {"framework": "plain"}


def test_health_answers_while_predict_is_busy(start: Any, short_dir: Path) -> None:
    gate = short_dir / "predict-gate"
    replica = start(TEST_PREDICT_GATE=str(gate))
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(replica.client.post, "/predict", json={"inputs": "wait"})
        wait_for(lambda: not busy.done() and _status(replica.client, "/health") == 200,
                 what="/health during a predict")
        assert not busy.done()
        gate.touch()
        assert busy.result().json() == {"outputs": "waited"}


def test_concurrent_requests_go_in_one_batch_in_order(start: Any, short_dir: Path) -> None:
    log = short_dir / "batches"
    # A long wait: the batch goes only once full, so four callers make one batch.
    replica = start(BATCHER, NAI_MAX_BATCH="4", NAI_MAX_WAIT_MS="60000",
                    TEST_BATCH_LOG=str(log))
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(
            lambda i: replica.client.post("/predict", json={"inputs": [i, 10 * i]}).json(),
            range(4)))
    assert answers == [{"outputs": [3 * i, 30 * i]} for i in range(4)]
    assert log.read_text().split() == ["4"]


def test_a_bad_input_fails_only_its_own_request_in_a_batch(start: Any,
                                                           short_dir: Path) -> None:
    log = short_dir / "batches"
    replica = start(BATCHER, NAI_MAX_BATCH="2", NAI_MAX_WAIT_MS="60000",
                    TEST_BATCH_LOG=str(log))
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(
            lambda x: replica.client.post("/predict", json={"inputs": x}), ["boom", [1]]))
    assert log.read_text().split() == ["2"]  # they were batched, and the batch failed
    assert answers[0].status_code == 500
    assert "inputs must be numbers" in answers[0].json()["error"]["message"]
    assert answers[1].status_code == 200 and answers[1].json() == {"outputs": [3]}


def test_the_socket_is_the_replica_users_alone(start: Any) -> None:
    replica = start()
    assert stat.S_IMODE(replica.sock.stat().st_mode) == 0o600


def test_a_model_that_fails_to_load_ends_the_process_saying_why(start: Any) -> None:
    replica = start("def load(d):\n    raise RuntimeError('weights missing')\n"
                    "def predict(x):\n    return x\n", wait_ready=False)
    assert replica.proc.wait(timeout=30) == 1
    err = replica.proc.communicate()[1].decode()
    assert "RuntimeError: weights missing" in err and "failed to load" in err


def test_a_model_dir_without_predict_py_is_refused(start: Any) -> None:
    replica = start(None, wait_ready=False)
    assert replica.proc.wait(timeout=30) == 1
    assert "predict.py not found" in replica.proc.communicate()[1].decode()


def test_a_predict_py_without_predict_is_refused(start: Any) -> None:
    replica = start("def load(d):\n    pass\n", wait_ready=False)
    assert replica.proc.wait(timeout=30) == 1
    assert "no predict(inputs)" in replica.proc.communicate()[1].decode()


def test_the_numpy_example_serves_exactly_what_its_predict_computes(
        start: Any, short_dir: Path) -> None:
    """jobs/numpy-regression trained as `nai submit --register-model` would record it,
    then served: the bytes answered are those of calling its predict directly."""
    out = short_dir / "outputs"
    subprocess.run([sys.executable, str(ROOT / "jobs" / "numpy-regression" / "train.py"),
                    "--epochs", "3"], env={**os.environ, "NAI_OUTPUT_DIR": str(out)},
                   check=True, capture_output=True)
    rows = [[0.1 * i - j for i in range(20)] for j in range(3)]
    direct = subprocess.run(
        [sys.executable, "-c", "import json, sys, predict; predict.load(sys.argv[1]); "
         "print(json.dumps(predict.predict(json.loads(sys.argv[2]))))", str(out),
         json.dumps(rows)], cwd=out, check=True, capture_output=True, text=True).stdout
    replica = start(model_dir=out, NAI_MAX_BATCH="8")
    answer = replica.client.post("/predict", json={"inputs": rows})
    assert answer.json() == {"outputs": json.loads(direct)}
    with ThreadPoolExecutor(4) as pool:  # batched with others, each gets its own rows back
        many = list(pool.map(lambda r: replica.client.post(
            "/predict", json={"inputs": [r]}).json()["outputs"], rows))
    # One matrix product over several requests' rows may round the last bit otherwise.
    assert many == [[pytest.approx(p, rel=1e-12)] for p in json.loads(direct)]
    wrong = replica.client.post("/predict", json={"inputs": [[1.0, 2.0]]})
    assert wrong.status_code == 500 and "rows of 20 numbers" in wrong.json()["error"]["message"]
