"""The batch CLI against a real personal daemon: exit codes, --json, stdout for
data and stderr for diagnostics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
EXAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "numpy-regression"


PERSONAL_GPUS = 2  # the personal server of conftest's `env` fixture


def nai(env: dict[str, str], *args: str,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nai"), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_submit_follow_exit_codes_and_streams(env: dict[str, str]) -> None:
    ok = nai(env, "submit", str(EXAMPLE), "--follow")
    assert ok.returncode == 0, ok.stderr
    job_id = submitted_id(ok)
    assert ok.stdout.startswith("training on")  # the log alone is data: stdout, no id above it
    assert "epoch  40" in ok.stdout
    assert "syncing" in ok.stderr and f"job {job_id} succeeded" in ok.stderr
    # A log that ends mid-line: `> train.log` gets it as the job wrote it; where stdout
    # and stderr are one file (a terminal, 2>&1) the status is not glued to it.
    alone = nai(env, "submit", str(EXAMPLE), "--gpus", "0", "--command", "printf x",
                "--follow")
    assert alone.returncode == 0 and alone.stdout == "x", alone
    assert alone.stderr.endswith(f"\njob {submitted_id(alone)} succeeded (exit code 0)\n")
    both = subprocess.run([str(BIN / "nai"), "submit", str(EXAMPLE), "--gpus", "0",
                           "--command", "printf x; printf y >&2; exit 3", "--follow"],
                          env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=120)
    assert both.returncode == 3 and "\nxy\njob " in both.stdout, both.stdout
    assert both.stdout.endswith("failed (exit code 3)\n")
    failed = nai(env, "submit", str(EXAMPLE), "--command", "echo boom >&2; exit 3", "--follow")
    assert failed.returncode == 3 and "boom" in failed.stderr  # the job's stderr: ours


def submitted_id(run: subprocess.CompletedProcess[str]) -> int:
    """The id of a job `nai submit --follow` submitted: said on stderr, stdout being its log."""
    found = re.search(r"^submitted job (\d+) ", run.stderr, re.M)
    assert found, run.stderr
    return int(found[1])


def test_json_listings_parse(env: dict[str, str]) -> None:
    nai(env, "submit", str(EXAMPLE), "--command", "true", "--follow")
    jobs = json.loads(nai(env, "jobs", "--json").stdout)
    assert jobs and {"id", "state", "user", "spec"} <= set(jobs[0])
    job_id = jobs[0]["id"]
    assert json.loads(nai(env, "show", str(job_id), "--json").stdout)["id"] == job_id
    gpus = json.loads(nai(env, "gpus", "--json").stdout)
    assert gpus["source"] == "fake" and len(gpus["gpus"]) == 2
    assert json.loads(nai(env, "whoami", "--json").stdout)["admin"] is True
    assert isinstance(json.loads(nai(env, "metrics", str(job_id), "--json").stdout), list)
    servers = json.loads(nai(env, "server", "list", "--json").stdout)
    assert [(s["name"], s["default"], s["builtin"]) for s in servers] == [("local", True, True)]


def test_errors_go_to_stderr_with_nonzero_exit(env: dict[str, str], tmp_path: Path) -> None:
    missing = nai(env, "show", "9999")
    assert missing.returncode == 3 and missing.stdout == ""  # not found
    assert "no job 9999" in missing.stderr
    usage = nai(env, "show", "abc")
    assert usage.returncode == 2 and "job ids are numbers" in usage.stderr
    (tmp_path / "nai.yaml").write_text("command: echo hi\ngpus: 1\ntime_limt: 1h\n")
    bad = nai(env, "submit", str(tmp_path))
    assert bad.returncode == 1 and "nai.yaml:3:" in bad.stderr and "time_limit" in bad.stderr
    empty = nai(env, "submit", str(tmp_path / "nowhere"))
    assert empty.returncode == 2 and "not a folder" in empty.stderr  # a usage slip
    unknown = nai(env, "-s", "nope", "jobs")
    assert unknown.returncode == 1 and "nai server add" in unknown.stderr


def test_cancel_and_pull(env: dict[str, str], tmp_path: Path) -> None:
    sub = nai(env, "submit", str(EXAMPLE), "--command", "sleep 60")
    job_id = sub.stdout.strip()
    cancel = nai(env, "cancel", job_id)
    assert cancel.returncode == 0 and cancel.stdout.strip() == job_id
    again = nai(env, "cancel", job_id, "99999")  # an ended job is no error; a missing one is
    assert again.returncode == 3 and "no job 99999" in again.stderr
    done = nai(env, "submit", str(EXAMPLE), "--follow")
    job = str(submitted_id(done))
    pulled = nai(env, "pull", job, "--to", str(tmp_path / "out"))
    assert pulled.returncode == 0 and pulled.stdout.strip() == str(tmp_path / "out")
    weights = tmp_path / "out" / "weights.npz"
    assert weights.stat().st_size > 0
    weights.write_bytes(b"weights I trained further here")
    kept = nai(env, "pull", job, "--to", str(tmp_path / "out"), "--json")
    assert kept.returncode == 5 and "not overwritten: weights.npz" in kept.stderr
    assert [k["path"] for k in json.loads(kept.stdout)["kept"]] == ["weights.npz"]
    assert weights.read_bytes() == b"weights I trained further here"
    forced = nai(env, "pull", job, "--to", str(tmp_path / "out"), "--force")
    assert forced.returncode == 0 and weights.read_bytes() != b"weights I trained further here"


def test_no_server_running_says_how_to_start_one(tmp_path: Path) -> None:
    environ = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "c"),
               "XDG_RUNTIME_DIR": str(tmp_path / "r")}
    out = nai(environ, "jobs")
    assert out.returncode == 1 and "nai up" in out.stderr and out.stdout == ""


def test_jobs_pages_past_the_servers_page_size(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`--limit` above a page is fetched with the cursor; `--before`/`--since` filter."""
    from nai_tui.cli import build_parser, commands
    from nai_tui.testing import FakeServerClient

    client = FakeServerClient()
    for i in range(7):
        client.add_job(f"j{i}", state="succeeded", submitted_at=1000.0 + 100 * i)
    monkeypatch.setattr(commands, "PAGE", 2)

    def ids(*argv: str) -> list[int]:
        args = build_parser().parse_args(["jobs", "--json", *argv])
        assert commands.cmd_jobs(args, client) == 0
        return [j["id"] for j in json.loads(capsys.readouterr().out)]

    assert ids("--limit", "5") == [7, 6, 5, 4, 3]
    assert ids("--limit", "50") == [7, 6, 5, 4, 3, 2, 1]
    assert ids("--before", "4") == [3, 2, 1]
    assert ids("--since", "1970-01-01 00:20", "--limit", "3") == [7, 6, 5]  # from 1200 s: 3 to 7
    assert commands.since_time("2d") == pytest.approx(time.time() - 2 * 86400, abs=5)
