"""Serve the trained logistic regression: `nai serve MODEL@V` runs this (zero-code serving).

train.py copies this file next to weights.npz, so the model version that
`nai submit --register-model NAME` records can be served as it is.

    POST /predict {"inputs": [[x1, ..., x20], ...]}  →  {"outputs": [p, ...]}

Each output is the probability of class 1 for one row of 20 features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_weights: dict[str, Any] = {}


def load(model_dir: str) -> None:
    with np.load(Path(model_dir) / "weights.npz") as data:
        _weights["w"], _weights["b"] = data["w"], float(data["b"])


def _probabilities(x: np.ndarray) -> np.ndarray:
    w = _weights["w"]
    if x.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"inputs must be rows of {w.shape[0]} numbers, got shape {x.shape}")
    return 1 / (1 + np.exp(-(x @ w + _weights["b"])))


def predict(inputs: list[list[float]]) -> list[float]:
    return [float(p) for p in _probabilities(np.asarray(inputs, dtype=np.float64))]


def predict_batch(batch: list[list[list[float]]]) -> list[list[float]]:
    """Several requests' rows in one matrix product, split back per request."""
    arrays = [np.asarray(rows, dtype=np.float64) for rows in batch]
    if any(a.ndim != 2 for a in arrays):
        return [predict(rows) for rows in batch]  # each request's own error
    probabilities = [float(p) for p in _probabilities(np.concatenate(arrays))]
    out, start = [], 0
    for a in arrays:
        out.append(probabilities[start:start + len(a)])
        start += len(a)
    return out
