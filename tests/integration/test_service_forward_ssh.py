"""A service reached the way people reach it: a real non-root user trains a model
through the daemon, serves it, and queries it through `nai service forward` over a
real loopback sshd; the bytes answered are those of its predict.py called by hand.
Another user cannot see the service, nor forward to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
from conftest import BIN, Daemon, Sshd, needs_root  # type: ignore[import-not-found]
from svc_support import reaper  # type: ignore[import-not-found]
from test_e2e_ssh import nai, setup_client  # type: ignore[import-not-found]

__all__ = ["reaper"]  # a fixture: the replicas of a failed test are stopped
pytestmark = [needs_root]
ROWS = [[0.05 * i - j for i in range(20)] for j in range(3)]
DIRECT = """
import json, sys
import predict
from nai_server.serving.replica import dumps
predict.load(sys.argv[1])
sys.stdout.buffer.write(dumps({"outputs": predict.predict(json.loads(sys.argv[2]))}))
"""


def test_forward_over_ssh_answers_what_predict_computes(daemon: Daemon, sshd: Sshd,
                                                        make_user, reaper) -> None:
    alice, bob = make_user(), make_user()
    reaper.append((daemon, alice))
    relay = f"nai-server dial-stdio --socket {daemon.socket}"
    for user in (alice, bob):
        setup_client(user, sshd)
        assert nai(user, "server", "add", "lab", "gpu", "--remote-command", relay).returncode == 0
        assert nai(user, "server", "trust", "lab", "--yes").returncode == 0
        assert daemon.admin("user", "add", user.name).returncode == 0

    trained = nai(alice, "submit", "proj", "--register-model", "reg", "--follow")
    assert trained.returncode == 0, trained.stderr
    served = nai(alice, "serve", "reg@1", "--name", "reg", "--gpus", "0", "--wait", "--json")
    assert served.returncode == 0, served.stderr
    info = json.loads(served.stdout)
    assert info["state"] == "ready" and info["user"] == alice.name
    pid = info["replica_info"][0]["pid"]
    assert pid and os.stat(f"/proc/{pid}").st_uid == alice.uid  # runs as its owner

    forward = subprocess.Popen(
        [str(BIN / "nai"), "service", "forward", "reg", "--port", "0"], user=alice.uid,
        group=alice.gid, extra_groups=[], cwd=alice.home, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"HOME": str(alice.home), "USER": alice.name, "PATH": f"{BIN}:/usr/bin:/bin",
             "LANG": "C.UTF-8", **({"PYTHONPATH": os.environ["PYTHONPATH"]}
                                   if "PYTHONPATH" in os.environ else {})})
    try:
        assert forward.stdout is not None and forward.stderr is not None
        url = forward.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), forward.stderr.read()
        answer = httpx.post(f"{url}/predict", json={"inputs": ROWS}, timeout=60)
        assert answer.status_code == 200, answer.text
        model = daemon.state / "services"
        model_dir = next(model.glob("*/model"))
        direct = subprocess.run([sys.executable, "-c", DIRECT, str(model_dir), json.dumps(ROWS)],
                                cwd=model_dir, capture_output=True, check=True).stdout
        assert answer.content == direct
    finally:
        forward.terminate()
        forward.wait(30)

    # Bob may not see alice's private service: not found, said before any port opens.
    assert nai(bob, "service", "show", "reg").returncode == 3
    refused = nai(bob, "service", "forward", "reg", "--port", "0")
    assert refused.returncode == 3 and refused.stdout == "" and "reg" in refused.stderr
    assert nai(alice, "service", "stop", "reg").returncode == 0
