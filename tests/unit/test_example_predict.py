"""The example jobs' predict.py files, called as the replica server calls them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

JOBS = Path(__file__).resolve().parents[2] / "jobs"


def _import(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("outputs")
    subprocess.run([sys.executable, str(JOBS / "numpy-regression" / "train.py"),
                    "--epochs", "5"], env={**os.environ, "NAI_OUTPUT_DIR": str(out)},
                   check=True, capture_output=True)
    return out


def test_training_leaves_predict_py_beside_the_weights(trained: Path) -> None:
    assert (trained / "predict.py").read_bytes() == (
        JOBS / "numpy-regression" / "predict.py").read_bytes()


def test_numpy_predict_is_the_trained_logistic_regression(trained: Path) -> None:
    predict = _import(trained / "predict.py", "numpy_predict")
    predict.load(str(trained))
    weights = np.load(trained / "weights.npz")
    rows = np.random.default_rng(1).normal(size=(5, 20))
    expected = 1 / (1 + np.exp(-(rows @ weights["w"] + weights["b"])))
    assert predict.predict(rows.tolist()) == pytest.approx(expected.tolist())
    batch = [rows[:2].tolist(), rows[2:].tolist()]
    assert predict.predict_batch(batch) == [predict.predict(b) for b in batch]
    with pytest.raises(ValueError, match="rows of 20 numbers"):
        predict.predict([[1.0, 2.0]])


def test_pytorch_predict_imports_without_torch() -> None:
    module = _import(JOBS / "pytorch-classifier" / "predict.py", "torch_predict")
    assert callable(module.load) and callable(module.predict_batch)
