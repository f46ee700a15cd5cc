"""The design's seams: the server never imports the TUI; pure core imports no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE_ALLOWED = {"__future__", "collections", "dataclasses", "difflib", "enum", "hashlib",
                "itertools", "json", "math", "posixpath", "re", "sys", "typing", "yaml",
                "functools", "heapq", "bisect", "nai_server", "stat", "statistics",
                "operator", "abc", "collections.abc", "fractions", "decimal", "string"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_server_never_imports_textual_or_the_client() -> None:
    for path in (ROOT / "nai_server").rglob("*.py"):
        bad = {n for n in _imports(path) if n.split(".")[0] in {"textual", "nai_tui"}}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_core_is_pure() -> None:
    for path in (ROOT / "nai_server" / "core").rglob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top in CORE_ALLOWED, f"{path.relative_to(ROOT)} imports {name}"
            if top == "nai_server":
                assert name.startswith("nai_server.core"), f"{path.name} imports {name}"


def test_client_imports_only_the_protocol_from_the_server() -> None:
    for path in (ROOT / "nai_tui").rglob("*.py"):
        for name in _imports(path):
            if name.startswith("nai_server"):
                assert name == "nai_server.protocol", f"{path.relative_to(ROOT)}: {name}"
