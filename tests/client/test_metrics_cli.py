"""`nai logs -f` and `nai metrics` against a real personal daemon, on a print-only job
whose metrics come from `metrics:` in its nai.yaml."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from nai_server.testing import wait_for

BIN = Path(sys.executable).parent
SPEC = """\
command: >-
  echo 'epoch 1 loss 0.5'; while [ ! -e {gate} ]; do sleep 0.05; done;
  echo 'epoch 2 loss 0.25'
gpus: 0
metrics:
  - pattern: 'epoch (?P<epoch>\\d+) loss (?P<loss>[\\d.]+)'
    step: epoch
"""


def nai(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nai"), *args], env=env, capture_output=True, text=True,
                          timeout=120)


def first_line(stream: io.BufferedReader, timeout: float = 30.0) -> bytes:
    """The first line the stream gives, waiting for it at most `timeout` seconds."""
    got = b""
    deadline = time.monotonic() + timeout
    while not got.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no complete line within {timeout} s (got {got!r})"
        ready, _, _ = select.select([stream], [], [], left)
        if ready:
            byte = os.read(stream.fileno(), 1)
            assert byte, f"the stream ended after {got!r}"
            got += byte
    return got


def test_follow_into_a_pipe_then_metrics_views(env: dict[str, str], tmp_path: Path) -> None:
    gate = tmp_path / "go"
    code = tmp_path / "code"
    code.mkdir()
    (code / "nai.yaml").write_text(SPEC.format(gate=gate))
    sub = nai(env, "submit", str(code))
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.split()[0]
    follow = subprocess.Popen([str(BIN / "nai"), "logs", job_id, "-f"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert follow.stdout is not None
        # The line shows while the job still runs, not when the stream ends.
        assert first_line(follow.stdout) == b"epoch 1 loss 0.5\n"
        # Ctrl-C on another follower: it stops, says the job goes on, loses nothing.
        stopped = subprocess.Popen([str(BIN / "nai"), "logs", job_id, "-f"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert stopped.stdout is not None
        assert first_line(stopped.stdout) == b"epoch 1 loss 0.5\n"
        stopped.send_signal(signal.SIGINT)
        _, said = stopped.communicate(timeout=30)
        assert stopped.returncode == 130 and b"it goes on" in said, said
        gate.touch()
        rest, _ = follow.communicate(timeout=60)
    finally:
        follow.kill()
        follow.wait()
    assert follow.returncode == 0 and rest == b"epoch 2 loss 0.25\n"
    wait_for(lambda: json.loads(nai(env, "show", job_id, "--json").stdout)["state"]
             == "succeeded", what="the job's end")

    shown = nai(env, "metrics", job_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["STEP", "TIME", "epoch", "loss"], lines
    assert [line.split()[0] for line in lines[1:]] == ["1", "2"]
    assert all(re.fullmatch(r"\+\d+[smhd]\w*", line.split()[1]) for line in lines[1:]), lines
    assert not re.search(r"\d{9,}", shown.stdout)  # never a raw Unix time
    iso = nai(env, "metrics", job_id, "--iso").stdout
    assert re.search(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ", iso)

    table = list(csv.DictReader(io.StringIO(nai(env, "metrics", job_id, "--csv").stdout)))
    assert [(r["step"], r["loss"]) for r in table] == [("1", "0.5"), ("2", "0.25")]
    assert re.fullmatch(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ", table[0]["time"])

    last = nai(env, "metrics", job_id, "--last", "--json")
    assert [r["loss"] for r in json.loads(last.stdout)] == [0.25]
    summary = nai(env, "metrics", job_id, "--summary", "--json")
    assert json.loads(summary.stdout)["loss"] == {
        "min": 0.25, "min_step": 2, "max": 0.5, "max_step": 1, "last": 0.25,
        "last_step": 2, "points": 2}
    words = nai(env, "metrics", job_id, "--summary").stdout.splitlines()
    assert words[0].split() == ["METRIC", "MIN", "MAX", "LAST", "POINTS"]
    assert any(line.startswith("loss") and "0.25 (step 2)" in line for line in words)
