"""Fine-tune a linear model with numpy: start from $NAI_MODEL_DIR/weights.npz (zeros if
there is none), train on $NAI_DATASET_DIR/data.npz, write the new weights and this
script to $NAI_OUTPUT_DIR, so that the outputs are again a model one can fine-tune.

    nai model push linreg jobs/finetune-numpy/model --finetune-command 'python train.py'
    python jobs/finetune-numpy/make_data.py /tmp/points && nai dataset push points /tmp/points
    nai finetune linreg --dataset points --register-model linreg --follow
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()

    base = Path(os.environ.get("NAI_MODEL_DIR", ".")) / "weights.npz"
    data = np.load(Path(os.environ.get("NAI_DATASET_DIR", "data")) / "data.npz")
    x, y = data["x"], data["y"]
    if base.exists():
        w = np.load(base)["w"].astype(np.float64)
        print(f"starting from {base}")
    else:
        w = np.zeros(x.shape[1])
        print("starting from zeros")
    out = Path(os.environ.get("NAI_OUTPUT_DIR", "output"))
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = Path(os.environ.get("NAI_METRICS_FILE", out / "metrics.jsonl"))
    with metrics_path.open("a") as metrics:
        for epoch in range(1, args.epochs + 1):
            err = x @ w - y
            w -= args.lr * x.T @ err / len(x)
            loss = float(np.mean(err**2))
            metrics.write(json.dumps({"step": epoch, "loss": round(loss, 6)}) + "\n")
    np.savez(out / "weights.npz", w=w)
    shutil.copy(Path(__file__), out / "train.py")  # the outputs are a model again
    print(f"done: loss {loss:.6f}")


if __name__ == "__main__":
    main()
