"""The first-party plugins are installable distributions of their own (plugins/NAME/,
each with its pyproject.toml and entry points, a module of the `nai_plugins`
namespace), not part of nai's own distribution; `make` installs every one of them
for the tests."""

from __future__ import annotations

import ast
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from nai_server.plugins.contracts import GROUPS

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))
FIRST_PARTY = {"split", "dedupe", "images", "labels", "default_time_limit", "max_time_limit",
               "max_gpus_per_user", "webhook", "email", "notify_file"}


def _project(folder: Path) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text())["project"]


def _defines(module: Path, name: str) -> bool:
    tree = ast.parse(module.read_text())
    return any(getattr(node, "name", None) == name
               or any(getattr(t, "id", None) == name for t in getattr(node, "targets", ()))
               for node in tree.body)


def test_nai_itself_ships_no_plugin() -> None:
    project = _project(ROOT)
    assert not set(project.get("entry-points", {})) & set(GROUPS.values())
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not any("nai_plugins" in p for p in found["packages"]["find"]["include"])
    assert not (ROOT / "nai_plugins").exists()


def test_each_plugin_is_a_distribution_whose_entry_points_it_holds() -> None:
    names: dict[str, str] = {}
    for folder in PLUGINS:
        project = _project(folder)
        assert project["name"] == f"nai-plugin-{folder.name}"
        # A namespace portion: an __init__.py would hide every other plugin's modules.
        assert not (folder / "nai_plugins" / "__init__.py").exists()
        groups = project["entry-points"]
        assert groups and set(groups) <= set(GROUPS.values()), folder.name
        for entries in groups.values():
            for name, target in entries.items():
                module, _, attr = target.partition(":")
                top, _, rest = module.partition(".")
                assert top == "nai_plugins" and "." not in rest, target
                source = folder / "nai_plugins" / f"{rest}.py"
                assert source.is_file(), f"{folder.name}: {target} is not in the folder"
                assert not attr or _defines(source, attr), target
                assert name not in names, f"{name} in both {names.get(name)} and {folder.name}"
                names[name] = folder.name
    assert set(names) == FIRST_PARTY


def test_make_installs_every_plugin_for_the_tests(tmp_path: Path) -> None:
    shown = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), f"VENV={tmp_path}",
                            f"{tmp_path}/.installed"], capture_output=True, text=True,
                           check=True).stdout
    install = next(line for line in shown.splitlines() if "[test,docs]" in line)
    for folder in PLUGINS:
        assert f"-e ./plugins/{folder.name}" in install.split("'.[test,docs]'")[1]


def test_the_installed_plugins_come_from_their_own_distributions() -> None:
    found = {ep.name: ep.dist.name if ep.dist else None for group in GROUPS.values()
             for ep in metadata.entry_points(group=group) if ep.name in FIRST_PARTY}
    if not found or "nothingai" in found.values():
        pytest.skip("this environment's nai was installed before plugins/ existed: "
                    "rerun make to install the plugins' distributions")
    assert set(found) == FIRST_PARTY
    for name, dist in found.items():
        assert dist is not None and dist.startswith("nai-plugin-"), (name, dist)
