"""Write a small regression dataset (`data.npz`: x, y) for the fine-tuning example."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(dest: str = "data", seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(500, 4))
    y = x @ np.array([1.5, -2.0, 0.5, 3.0]) + rng.normal(scale=0.1, size=500)
    Path(dest).mkdir(parents=True, exist_ok=True)
    np.savez(Path(dest) / "data.npz", x=x, y=y)
    print(Path(dest) / "data.npz")


if __name__ == "__main__":
    main(*sys.argv[1:2])
