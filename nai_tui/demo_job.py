"""The job `nai demo` runs: logistic regression on synthetic data, standard library only.

`nai demo` copies this file into a fresh folder as `train.py`, beside a nai.yaml that
runs it with the Python `nai` itself runs under, so the demo works after a plain
`pip install` (no numpy, no checkout). Under nai, $NAI_METRICS_FILE and
$NAI_OUTPUT_DIR are set; run by hand, it writes to ./output/ instead."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import time
from pathlib import Path

NAME = "demo-regression"


def spec_yaml(python: str) -> str:
    """The demo's nai.yaml: this file run by `python` (an absolute path)."""
    return (f"# made by `nai demo`: {NAME} with the standard library only\n"
            f"name: {NAME}\n"
            f"command: {json.dumps(shlex.quote(python) + ' train.py --epochs 40')}\n"
            f"gpus: 0\ntime_limit: 10m\nenv:\n  SEED: \"7\"\n")


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.5)
    args = parser.parse_args()

    out = Path(os.environ.get("NAI_OUTPUT_DIR", "output"))
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = Path(os.environ.get("NAI_METRICS_FILE", out / "metrics.jsonl"))
    rng = random.Random(int(os.environ.get("SEED", "0")))

    n, d = 1000, 8
    true_w = [rng.gauss(0, 1) for _ in range(d)]
    xs = [[rng.gauss(0, 1) for _ in range(d)] for _ in range(n)]
    ys = [1.0 if _dot(x, true_w) + rng.gauss(0, 0.5) > 0 else 0.0
          for x in xs]
    train, val = list(zip(xs[:800], ys[:800], strict=True)), \
        list(zip(xs[800:], ys[800:], strict=True))

    w, b, acc = [0.0] * d, 0.0, 0.0
    print(f"training on {len(train)} samples, {d} features, "
          f"job {os.environ.get('NAI_JOB_ID', '-')}", flush=True)
    with metrics_path.open("a") as metrics:
        for epoch in range(1, args.epochs + 1):
            grad_w, grad_b, loss = [0.0] * d, 0.0, 0.0
            for x, y in train:
                p = _sigmoid(_dot(x, w) + b)
                for i in range(d):
                    grad_w[i] += (p - y) * x[i]
                grad_b += p - y
                loss -= y * math.log(p + 1e-9) + (1 - y) * math.log(1 - p + 1e-9)
            w = [wi - args.lr * g / len(train) for wi, g in zip(w, grad_w, strict=True)]
            b -= args.lr * grad_b / len(train)
            loss /= len(train)
            acc = sum((_dot(x, w) + b > 0) == (y == 1.0) for x, y in val) / len(val)
            metrics.write(json.dumps({"step": epoch, "loss": round(loss, 5),
                                      "val_acc": round(acc, 4), "time": time.time()}) + "\n")
            metrics.flush()
            if epoch % 10 == 0:
                print(f"epoch {epoch:3d}  loss {loss:.4f}  val_acc {acc:.3f}", flush=True)

    (out / "weights.json").write_text(json.dumps({"w": w, "b": b}))
    (out / "summary.json").write_text(json.dumps({"val_acc": acc, "epochs": args.epochs}))
    print(f"done: val_acc {acc:.3f}; weights in {out / 'weights.json'}")


if __name__ == "__main__":
    main()
