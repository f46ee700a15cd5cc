"""`nai model register JOB` and what `nai model show` prints of the job a version came
from, with the real `nai` command against a personal server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent

TRAIN = """\
import json, os
out = os.environ["NAI_OUTPUT_DIR"]
os.makedirs(f"{out}/ckpt", exist_ok=True)
open(f"{out}/ckpt/model.bin", "w").write("weights")
with open(os.environ["NAI_METRICS_FILE"], "a") as f:
    for step, (loss, acc) in enumerate([(1.5, 0.4), (0.25, 0.8), (0.5, 0.85)], 1):
        f.write(json.dumps({"step": step, "loss": loss, "acc": acc}) + "\\n")
"""


def nai(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nai"), *args], env=env, capture_output=True, text=True,
                          timeout=120)


def job_of(run: subprocess.CompletedProcess[str]) -> str:
    """The id of the job `nai submit --follow` (or `finetune --follow`) submitted: said
    on stderr, stdout being the job's log."""
    found = re.search(r"^submitted job (\d+) ", run.stderr, re.M)
    assert found, run.stderr
    return found[1]


def test_register_a_job_then_show_its_metrics(env: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "train"
    project.mkdir()
    (project / "train.py").write_text(TRAIN)
    ran = nai(env, "submit", str(project), "--command", "python train.py", "--gpus", "0",
              "--follow")
    assert ran.returncode == 0, ran.stderr
    job = job_of(ran)

    made = nai(env, "model", "register", job, "--name", "clf", "--path", "ckpt",
               "--metric", "acc")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "clf@1"
    # stderr: what was made, and the metrics table with the chosen metric first.
    assert f"from job {job} (ckpt)" in made.stderr
    rows = [line.split() for line in made.stderr.splitlines()]
    header = next(i for i, r in enumerate(rows) if r[:1] == ["METRIC"])
    assert rows[header + 1][:6] == ["*", "acc", "0.85", "3", "0.85", "3"]
    assert rows[header + 2][:5] == ["loss", "0.25", "2", "0.5", "3"]

    listed = nai(env, "model", "list").stdout.splitlines()
    assert "METRIC (BEST)" in listed[0]
    assert "acc 0.85" in next(line for line in listed if line.startswith("clf "))
    version = json.loads(nai(env, "model", "show", "clf@1", "--json").stdout)
    assert version["files"] == 1 and version["metadata"]["metric"]["name"] == "acc"
    shown = nai(env, "model", "show", "clf")
    assert shown.returncode == 0, shown.stderr
    assert "latest, @1:" in shown.stdout
    assert f"from:     job {job} (outputs at ckpt)" in shown.stdout
    assert "lower is better" in shown.stdout and "higher is better" in shown.stdout
    one = nai(env, "model", "show", "clf@1").stdout
    assert "metrics:" in one and '"summary"' not in one  # a table, not raw JSON

    # The job's code comes along with --with-code, its command as the finetune command.
    coded = nai(env, "model", "register", job, "--name", "clf", "--with-code", "--json")
    assert coded.returncode == 0, coded.stderr
    meta = json.loads(coded.stdout)
    assert meta["version"] == 2 and meta["metadata"]["finetune_command"] == "python train.py"
    assert meta["files"] == 2  # train.py and ckpt/model.bin

    lone = nai(env, "model", "register", job, "--name", "clf", "--min")
    assert lone.returncode == 2 and "--metric" in lone.stderr  # refused before it is sent
    missing = nai(env, "model", "register", "999", "--name", "clf")
    assert missing.returncode == 3 and "no job 999" in missing.stderr


def test_register_metric_flag(env: dict[str, str], tmp_path: Path) -> None:
    """`nai submit --register-metric` is the spec's `register_metric:`; `:min`/`:max` is
    its direction, and a bad value is refused before anything is sent."""
    project = tmp_path / "train"
    project.mkdir()
    (project / "train.py").write_text(TRAIN)
    ran = nai(env, "submit", str(project), "--command", "python train.py", "--gpus", "0",
              "--register-model", "flagged", "--register-metric", "loss:max", "--follow")
    assert ran.returncode == 0, ran.stderr
    job = json.loads(nai(env, "show", job_of(ran), "--json").stdout)
    assert job["spec"]["register_metric"] == {"name": "loss", "direction": "max"}
    made = json.loads(nai(env, "model", "show", "flagged@1", "--json").stdout)
    # "max" overrides the guess for a loss: the best is 1.5, at step 1.
    assert made["metadata"]["metric"] == {"name": "loss", "direction": "max", "best": 1.5,
                                          "best_step": 1, "last": 0.5, "last_step": 3,
                                          "count": 3}
    plain = nai(env, "submit", str(project), "--command", "python train.py", "--gpus", "0",
                "--register-model", "flagged", "--register-metric", "acc", "--dry-run")
    assert plain.returncode == 0, plain.stderr
    bad = nai(env, "submit", str(project), "--register-metric", ":min")
    assert bad.returncode == 2 and "name the metric" in bad.stderr
