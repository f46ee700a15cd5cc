"""`nai-server check` against a personal server started by `nai up --fake-gpus 2`, and
`nai up`/`nai down` with a state dir and socket of one's own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
PERSONAL_GPUS = 2


def run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], env=env, capture_output=True,
                          text=True, timeout=60)


def test_check_personal_reports_the_running_daemons_fake_gpus(env: dict[str, str]) -> None:
    checked = run(env, "nai-server", "check", "--personal", "--json")
    report = json.loads(checked.stdout)
    assert not any("no GPUs" in p for p in report["problems"]), report["problems"]
    assert report["gpu_source"] == "fake" and len(report["gpus"]) == 2
    assert "--fake-gpus" in report["gpu_note"]
    shown = run(env, "nai-server", "check", "--personal")
    assert "gpu source: fake (the running daemon's" in shown.stdout
    assert "gpu 1: Fake GPU" in shown.stdout


def test_check_of_another_server_mentions_the_personal_one(env: dict[str, str],
                                                            tmp_path: Path) -> None:
    checked = run(env, "nai-server", "check", "--json", "--socket", str(tmp_path / "no.sock"),
                  "--state-dir", str(tmp_path / "state"))
    report = json.loads(checked.stdout)
    personal = Path(env["XDG_RUNTIME_DIR"]) / "nai" / "nai.sock"
    assert checked.returncode == 1 and report["personal_daemon"]["socket"] == str(personal)
    assert any("`nai-server check --personal` checks that one" in p for p in report["problems"])


def test_up_and_down_with_a_state_dir_and_socket(env: dict[str, str], tmp_path: Path) -> None:
    state, sock = tmp_path / "mine", tmp_path / "mine.sock"
    up = run(env, "nai", "up", "--state-dir", str(state), "--socket", str(sock),
             "--fake-gpus", "1")
    assert up.returncode == 0, up.stderr
    try:
        assert f"nai down --socket {sock}" in up.stderr
        assert f"nai server add NAME local:{sock}" in up.stderr
        assert sock.is_socket() and (state / "daemon.log").exists()
        checked = run(env, "nai-server", "check", "--personal", "--json", "--socket", str(sock),
                      "--state-dir", str(state))
        assert json.loads(checked.stdout)["daemon"] is not None, checked.stdout
        again = run(env, "nai", "up", "--socket", str(sock))
        assert "already running" in again.stderr
    finally:
        down = run(env, "nai", "down", "--socket", str(sock))
    assert down.returncode == 0 and "stopped" in down.stderr and not sock.exists()
    # The default personal server is still up.
    assert json.loads(run(env, "nai-server", "check", "--personal", "--json").stdout)["daemon"]
