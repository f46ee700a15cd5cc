"""A real, unmodified CPU PyTorch training script through the real multi-user daemon,
as a real unix user: its `SummaryWriter` scalars and the lines it prints both become
metrics with no code change (`metrics: {tensorboard: runs/, patterns: [...]}`), it
writes its event files beside its code (whose files are read-only links, whose
folders are its own), and its checkpoint becomes a model version whose summary has the
best and the last loss.

Needs torch with TensorBoard: an interpreter that has them named by $NAI_TORCH_PYTHON,
or this one. Skipped otherwise (torch is large; CI does not install it).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from typing import Any

import pytest
from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]
from test_registry_access import Actor, upload_tree  # type: ignore[import-not-found]

TORCH_PYTHON = os.environ.get("NAI_TORCH_PYTHON") or sys.executable
HAS_TORCH = (bool(os.environ.get("NAI_TORCH_PYTHON"))
             or importlib.util.find_spec("torch") is not None)
pytestmark = [needs_root, pytest.mark.skipif(
    not HAS_TORCH, reason="no torch (set NAI_TORCH_PYTHON to an interpreter that has it)")]

TRAIN = """\
import os, torch
from torch.utils.tensorboard import SummaryWriter

torch.manual_seed(0)
x = torch.linspace(-1, 1, 64).unsqueeze(1)
y = 3 * x + 0.5
model = torch.nn.Linear(1, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.5)
writer = SummaryWriter("runs/exp")
for epoch in range(1, 6):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    writer.add_scalar("train/loss", loss.item(), epoch)
    print(f"epoch {epoch} val_acc {1 - loss.item() / 10:.4f}", flush=True)
writer.close()
torch.save(model.state_dict(), os.path.join(os.environ["NAI_OUTPUT_DIR"], "model.pt"))
"""


def test_a_pytorch_script_reports_metrics_without_changes(daemon: Daemon, make_user) -> None:
    probe = subprocess.run([TORCH_PYTHON, "-c", "import torch, tensorboard"],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr  # named, so it must work
    user = make_user()
    assert daemon.admin("user", "add", user.name).returncode == 0
    sender = Actor(daemon, user)  # the script, uploaded as its code
    tree = upload_tree(daemon, {"train.py": TRAIN.encode()}, sender)
    sender.http.close()
    sent = daemon.as_user(user, "POST", "/v1/jobs", {"code_tree": tree, "spec": {
        "command": f"{TORCH_PYTHON} train.py", "gpus": 0, "name": "torch",
        "metrics": {"tensorboard": "runs/",
                    "patterns": [r"epoch (?P<step>\d+) val_acc (?P<val_acc>[\d.]+)"]}}})
    assert sent.status == 201, sent.json()
    job_id = sent.json()["id"]
    with daemon.client() as root:
        def ended() -> dict[str, Any] | None:
            info = root.get(f"/v1/jobs/{job_id}").json()
            return info if info["state"] in ("succeeded", "failed", "lost") else None

        info = wait_for(ended, what="the torch job to end", timeout=300)
        log = root.get(f"/v1/jobs/{job_id}/logs").text
        assert info["state"] == "succeeded", (info, log, daemon.log())
        rows = root.get(f"/v1/jobs/{job_id}/metrics").json()["metrics"]
    losses = {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
    accs = {r["step"]: r["val_acc"] for r in rows if "val_acc" in r}
    assert sorted(losses) == sorted(accs) == [1, 2, 3, 4, 5], rows
    code = daemon.state / "jobs" / str(job_id) / "code"
    assert (code / "train.py").stat().st_uid == 0  # the blob, linked
    assert next((code / "runs" / "exp").glob("events.out.tfevents.*")).stat().st_uid == user.uid
    assert losses[5] < losses[1]  # it trained

    made = daemon.as_user(user, "POST", "/v1/models/linear/from-job",
                          {"job": job_id, "metric": "val_acc"})
    assert made.status == 201, made.json()
    meta = made.json()["metadata"]
    loss = meta["summary"]["train/loss"]
    assert loss["direction"] == "min" and loss["best"] == pytest.approx(min(losses.values()),
                                                                         rel=1e-5)
    assert (meta["metric"]["name"], meta["metric"]["direction"]) == ("val_acc", "max")
    assert made.json()["files"] == 1  # model.pt
