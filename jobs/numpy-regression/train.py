"""Logistic regression on synthetic data with numpy: metrics lines and a weights file.

Under nai, $NAI_METRICS_FILE and $NAI_OUTPUT_DIR are set; run by hand, it writes to
./output/ instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.5)
    args = parser.parse_args()

    out = Path(os.environ.get("NAI_OUTPUT_DIR", "output"))
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = Path(os.environ.get("NAI_METRICS_FILE", out / "metrics.jsonl"))
    rng = np.random.default_rng(int(os.environ.get("SEED", "0")))

    n, d = 4000, 20
    true_w = rng.normal(size=d)
    x = rng.normal(size=(n, d))
    y = (x @ true_w + rng.normal(scale=0.5, size=n) > 0).astype(np.float64)
    x_train, y_train, x_val, y_val = x[:3200], y[:3200], x[3200:], y[3200:]

    w = np.zeros(d)
    b = 0.0
    print(f"training on {len(x_train)} samples, {d} features, job {os.environ.get('NAI_JOB_ID', '-')}")
    with metrics_path.open("a") as metrics:
        for epoch in range(1, args.epochs + 1):
            p = 1 / (1 + np.exp(-(x_train @ w + b)))
            grad = p - y_train
            w -= args.lr * x_train.T @ grad / len(x_train)
            b -= args.lr * grad.mean()
            loss = -np.mean(y_train * np.log(p + 1e-9) + (1 - y_train) * np.log(1 - p + 1e-9))
            acc = np.mean(((x_val @ w + b) > 0) == y_val)
            metrics.write(json.dumps({"step": epoch, "loss": round(float(loss), 5),
                                      "val_acc": round(float(acc), 4), "time": time.time()})
                          + "\n")
            metrics.flush()
            if epoch % 10 == 0:
                print(f"epoch {epoch:3d}  loss {loss:.4f}  val_acc {acc:.3f}", flush=True)

    np.savez(out / "weights.npz", w=w, b=b)
    # With predict.py beside the weights, the registered model can be served (`nai serve`).
    shutil.copy(Path(__file__).with_name("predict.py"), out / "predict.py")
    (out / "summary.json").write_text(json.dumps({"val_acc": float(acc), "epochs": args.epochs}))
    print(f"done: val_acc {acc:.3f}; weights in {out / 'weights.npz'}")


if __name__ == "__main__":
    main()
