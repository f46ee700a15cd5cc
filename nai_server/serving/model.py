"""A model version's `predict.py`, loaded once and called from one worker thread."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

METADATA_FILES = ("metadata.json", "nai-model.json")


class ModelError(Exception):
    """The model directory cannot be served: the message says what to fix."""


class LoadedModel:
    """`predict.py` of one model directory: `predict_batch` runs a list of inputs,
    through the module's own `predict_batch` when it has one, else `predict` per input."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        predict = getattr(module, "predict", None)
        if not callable(predict):
            raise ModelError("predict.py defines no predict(inputs) function")
        self._predict: Callable[[Any], Any] = predict
        batch = getattr(module, "predict_batch", None)
        self._batch: Callable[[list[Any]], Any] | None = batch if callable(batch) else None

    @property
    def batches(self) -> bool:
        return self._batch is not None

    def predict(self, inputs: Any) -> Any:
        return self._predict(inputs)

    def predict_batch(self, inputs: list[Any]) -> list[Any]:
        if self._batch is None:
            return [self._predict(x) for x in inputs]
        outputs = list(self._batch(inputs))
        if len(outputs) != len(inputs):
            raise ModelError(f"predict_batch returned {len(outputs)} outputs for "
                             f"{len(inputs)} inputs: it must return one per input, in order")
        return outputs


def load_model(model_dir: Path) -> LoadedModel:
    """Import `model_dir/predict.py` (its folder first on sys.path, so it may import the
    modules beside it) and call its `load(model_dir)` once, when it has one."""
    path = model_dir / "predict.py"
    if not path.is_file():
        raise ModelError(f"{path} not found: a model served without its own server needs "
                         f"a predict.py with load(model_dir) and predict(inputs)")
    sys.path.insert(0, str(model_dir))
    spec = importlib.util.spec_from_file_location("predict", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["predict"] = module
    spec.loader.exec_module(module)
    model = LoadedModel(module)
    load = getattr(module, "load", None)
    if callable(load):
        load(str(model_dir))
    return model


def files_metadata(model_dir: Path) -> dict[str, Any]:
    """The JSON objects in the model directory's metadata files, merged (first wins)."""
    found: dict[str, Any] = {}
    for name in reversed(METADATA_FILES):
        try:
            data = json.loads((model_dir / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found.update(data)
    return found
