"""Finding plugins through their entry points: enabled ones load, disabled ones are not
even imported, a broken one is listed with its error and the others still load."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nai_server.config import PluginConfig, load_config
from nai_server.plugins import PluginRegistry
from nai_server.plugins.contracts import Kind, hookimpl
from nai_server.protocol import Invalid
from nai_server.testing.plugin_dist import write_dist

GOOD = '''
from nai_server.plugins.contracts import hookimpl

@hookimpl
def nai_submit_rule(submission, options):
    return None
'''
IMPORTED = '''
import os
open(os.environ["NAI_TEST_IMPORTED"], "a").write("imported\\n")
'''


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "site"
    write_dist(root, "nai-test-plugins", "1.2.3", {
        "t_good": GOOD,
        "t_broken": "raise RuntimeError('needs libfoo.so')\n",
        "t_nohook": "def something():\n    pass\n",
        "t_imported": IMPORTED + GOOD,
    }, {
        "nai.submit_rules": {"good": "t_good", "broken": "t_broken", "nohook": "t_nohook",
                             "off": "t_imported", "unconfigured": "t_imported"},
        "nai.dataset_processors": {"later": "t_good"},
    })
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("NAI_TEST_IMPORTED", str(tmp_path / "imported"))
    importlib.invalidate_caches()
    yield root
    for name in ("t_good", "t_broken", "t_nohook", "t_imported"):
        sys.modules.pop(name, None)


def states(registry: PluginRegistry) -> dict[str, tuple[str, str | None]]:
    return {s.name: (s.state, s.error) for s in registry.statuses()}


def test_discovery_lists_ok_broken_disabled_and_missing(site: Path, tmp_path: Path) -> None:
    on = PluginConfig()
    registry = PluginRegistry.discover({
        "good": on, "broken": on, "nohook": on, "off": PluginConfig(enabled=False),
        "gone": PluginConfig(required=True)})
    seen = states(registry)
    assert seen["good"] == ("ok", None)
    assert seen["broken"] == ("broken", "RuntimeError: needs libfoo.so")
    assert seen["nohook"][0] == "broken" and "no nai_submit_rule hook" in seen["nohook"][1]
    assert seen["off"] == ("disabled", None)
    assert seen["unconfigured"] == ("disabled", None)
    assert seen["later"] == ("disabled", None)  # listed, never imported by the daemon
    assert seen["gone"][0] == "missing"
    assert {s.version for s in registry.statuses() if s.name == "good"} == {"1.2.3"}
    # Only the good one runs; a disabled plugin is never imported.
    assert [h.name for h in registry.hooks(Kind.SUBMIT_RULE)] == ["good"]
    assert not (tmp_path / "imported").exists()


def test_objects_with_a_bad_signature_are_broken() -> None:
    class Wrong:
        @hookimpl
        def nai_submit_rule(self, submission, options, extra):  # not in the contract
            return None

    registry = PluginRegistry.from_objects({"wrong": PluginConfig()},
                                           [("wrong", Kind.SUBMIT_RULE, Wrong())])
    assert states(registry)["wrong"][0] == "broken"
    assert registry.hooks(Kind.SUBMIT_RULE) == []


def test_plugin_config_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("plugins:\n  max_gpus_per_user:\n    timeout: 0\n")
    with pytest.raises(Invalid, match=r"plugins\.max_gpus_per_user\.timeout"):
        load_config(path)
    path.write_text("plugins:\n  webhook:\n    timeout: 3s\n    options: {url: x}\n")
    cfg = load_config(path).plugins["webhook"]
    assert cfg.timeout == 3 and cfg.enabled and cfg.options == {"url": "x"}
