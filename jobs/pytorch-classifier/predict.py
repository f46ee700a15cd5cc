"""Serve the trained classifier: `nai serve MODEL@V` runs this (zero-code serving).

train.py copies this file next to model.pt, so the model version that
`nai submit --register-model NAME` records can be served as it is. The layer sizes are
read from the saved weights; the GPU nai gives the replica is used when there is one.

    POST /predict {"inputs": [[x1, ..., x64], ...]}  →  {"outputs": [class, ...]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_state: dict[str, Any] = {}


def load(model_dir: str) -> None:
    import torch  # here, not at the top: the file is importable where torch is not
    from torch import nn

    weights = torch.load(Path(model_dir) / "model.pt", map_location="cpu", weights_only=True)
    linear = sorted({k.split(".")[0] for k in weights}, key=int)
    layers: list[nn.Module] = []
    for i, index in enumerate(linear):
        out_features, in_features = weights[f"{index}.weight"].shape
        layers.append(nn.Linear(in_features, out_features))
        if i < len(linear) - 1:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    model.load_state_dict(weights)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _state.update(torch=torch, model=model.to(device).eval(), device=device,
                  features=model[0].in_features)
    print(f"loaded {len(linear)} layers on {device}", flush=True)


def predict(inputs: list[list[float]]) -> list[int]:
    return predict_batch([inputs])[0]


def predict_batch(batch: list[list[list[float]]]) -> list[list[int]]:
    """Every request's rows in one forward pass on the device, split back per request."""
    torch = _state["torch"]
    rows = [r for request in batch for r in request]
    x = torch.tensor(rows, dtype=torch.float32, device=_state["device"])
    if x.ndim != 2 or x.shape[1] != _state["features"]:
        raise ValueError(f"inputs must be rows of {_state['features']} numbers")
    with torch.no_grad():
        labels = _state["model"](x).argmax(1).tolist()
    out, start = [], 0
    for request in batch:
        out.append(labels[start:start + len(request)])
        start += len(request)
    return out
