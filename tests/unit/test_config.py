"""Server configuration: the example documents every key; flags override the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from nai_server.config import ServerConfig, load_config
from nai_server.protocol import Invalid

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys |= _keys(ann, f"{prefix}{name}.")
    return keys


def _flatten(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for name, value in data.items():
        keys.add(prefix + name)
        if isinstance(value, dict):
            keys |= _flatten(value, f"{prefix}{name}.")
    return keys


def test_example_documents_every_key_and_loads() -> None:
    documented = _flatten(yaml.safe_load(EXAMPLE.read_text()))
    assert _keys(ServerConfig) <= documented
    assert load_config(EXAMPLE).mode == "multi-user"


def test_flags_override_file(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLE, mode="personal", state_dir=tmp_path, fake_gpus=3)
    assert cfg.personal and cfg.state == tmp_path
    assert cfg.gpus.source == "fake" and len(cfg.gpus.fake) == 3


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("mode: personal\nschedular: {}\n")
    with pytest.raises(Invalid, match="schedular"):
        load_config(path)


def test_policy_names_are_checked_and_listed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("scheduler: {policy: fairest}\n")
    with pytest.raises(Invalid, match=r"fairest.*fifo, firstfit, backfill, fairshare"):
        load_config(path)
    assert load_config(None).scheduler.policy == "fairshare"


def test_fairshare_knobs_read_durations(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("scheduler:\n  fairshare: {half_life: 2d, preempt: false, "
                    "preempt_min_run: 90, reserve_window: 1h30m}\n")
    tuning = load_config(path).scheduler.fairshare.tuning()
    assert (tuning.half_life, tuning.preempt_min_run, tuning.reserve_window) == (
        2 * 86400, 90, 5400)
    assert tuning.preempt is False
    path.write_text("scheduler:\n  fairshare: {half_life: soon}\n")
    with pytest.raises(Invalid, match="half_life"):
        load_config(path)
