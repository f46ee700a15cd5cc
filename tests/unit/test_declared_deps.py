"""The package declares what it imports (issue 17, item 16): every third-party module
the code imports belongs to a distribution in [project] dependencies (or, for an
optional feature, an extra); those whose private APIs it touches have upper bounds;
the license is an SPDX expression."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("nai_server", "nai_tui", "nai_metrics")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# The first-party plugins: distributions of their own, each declaring what it imports.
PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))
# httpx: a transport's private `_pool` and a client's `_transport`; httpcore: the pool
# that takes its place; pathspec: the regexes it compiles, joined into one.
PRIVATE_APIS_USED = ("httpx", "httpcore", "pathspec")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported(folders: tuple[Path, ...] = tuple(ROOT / p for p in PACKAGES),
              own: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Top-level third-party module → the files importing it."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in own:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_distribution_is_declared() -> None:
    required = {_name(r) for r in PROJECT["dependencies"]}
    optional = {_name(r) for extra in PROJECT["optional-dependencies"].values() for r in extra}
    dists = packages_distributions()
    imported = _imported()
    assert {"httpcore", "anyio", "starlette"} <= set(imported)
    undeclared = {}
    for module, files in imported.items():
        names = {_name(d) for d in dists.get(module, [module])}
        if not names & (required | optional):
            undeclared[module] = sorted(files)
    assert not undeclared, f"imported but not in pyproject.toml: {undeclared}"


def test_every_plugin_distribution_declares_what_it_imports() -> None:
    assert len(PLUGINS) >= 7
    dists = packages_distributions()
    for plugin in PLUGINS:
        project = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]
        declared = {_name(r) for r in project["dependencies"]}
        assert project["license"] == "Apache-2.0"
        undeclared = {}
        for module, files in _imported((plugin / "nai_plugins",), ("nai_plugins",)).items():
            names = {"nothingai"} if module in PACKAGES else {
                _name(d) for d in dists.get(module, [module])}
            if not names & declared:
                undeclared[module] = sorted(files)
        assert not undeclared, f"{plugin.name}: not in its pyproject.toml: {undeclared}"


def test_private_apis_are_bounded_and_the_license_is_spdx() -> None:
    for requirement in PROJECT["dependencies"]:
        if _name(requirement) in PRIVATE_APIS_USED:
            assert "<" in requirement, f"{requirement}: its private API is used; bound it"
    assert {_name(r) for r in PROJECT["dependencies"]} >= set(PRIVATE_APIS_USED)
    assert PROJECT["license"] == "Apache-2.0"
