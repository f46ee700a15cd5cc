"""A small MLP classifier in PyTorch on synthetic data.

Uses the GPU it was given (nai sets CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER), or
the CPU when there is none. Writes metrics lines and the trained weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=512)
    args = parser.parse_args()

    out = Path(os.environ.get("NAI_OUTPUT_DIR", "output"))
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = Path(os.environ.get("NAI_METRICS_FILE", out / "metrics.jsonl"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {device} ({name}); CUDA_VISIBLE_DEVICES="
          f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}; pid {os.getpid()}", flush=True)

    torch.manual_seed(int(os.environ.get("SEED", "0")))
    n, d, classes = 20000, 64, 10
    centers = torch.randn(classes, d) * 2
    labels = torch.randint(0, classes, (n,))
    data = centers[labels] + torch.randn(n, d)
    data, labels = data.to(device), labels.to(device)

    model = nn.Sequential(nn.Linear(d, args.hidden), nn.ReLU(),
                          nn.Linear(args.hidden, args.hidden), nn.ReLU(),
                          nn.Linear(args.hidden, classes)).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    step = 0
    with metrics_path.open("a") as metrics:
        for epoch in range(1, args.epochs + 1):
            perm = torch.randperm(n, device=device)
            for start in range(0, n, args.batch):
                idx = perm[start:start + args.batch]
                optimiser.zero_grad()
                loss = loss_fn(model(data[idx]), labels[idx])
                loss.backward()
                optimiser.step()
                step += 1
            with torch.no_grad():
                acc = (model(data).argmax(1) == labels).float().mean().item()
            metrics.write(json.dumps({"step": step, "epoch": epoch, "loss": loss.item(),
                                      "acc": acc, "time": time.time()}) + "\n")
            metrics.flush()
            print(f"epoch {epoch}  loss {loss.item():.4f}  acc {acc:.3f}", flush=True)
    torch.save(model.state_dict(), out / "model.pt")
    # With predict.py beside the weights, the registered model can be served (`nai serve`).
    shutil.copy(Path(__file__).with_name("predict.py"), out / "predict.py")
    print(f"done; weights in {out / 'model.pt'}")


if __name__ == "__main__":
    main()
