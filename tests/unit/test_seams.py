"""The design's seams (DESIGN §2), read from the source with `ast`, lazy imports included:
pure core imports no I/O, the API reaches neither the store nor the host, the use cases
know no HTTP, the server never imports the client, the client sees only the protocol,
and the terminal UI and the batch CLI stay apart."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE_ALLOWED = {"__future__", "collections", "dataclasses", "difflib", "enum", "hashlib",
                "itertools", "json", "math", "posixpath", "re", "sys", "typing", "yaml",
                "functools", "heapq", "bisect", "nai_server", "stat", "statistics",
                "operator", "abc", "collections.abc", "fractions", "decimal", "string",
                # RE2: pure computation, and the only safe engine for users' metrics patterns
                "re2"}
HTTP = ("fastapi", "starlette", "uvicorn", "httpx", "nai_server.api")

# Known crossings, each with the reason it is still there.
KNOWN = {
    ("nai_tui/cli/__init__.py", "nai_tui.tui.app"),  # `nai` with no command starts the TUI
}


def _imports(path: Path) -> set[str]:
    """Every module a file imports; `from a import b` counts as `a.b`, so
    `from nai_server import host` is caught like `import nai_server.host`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _crossings(wing: str, *forbidden: str) -> Iterator[str]:
    for path in (ROOT / wing).rglob("*.py"):
        where = str(path.relative_to(ROOT))
        for name in sorted(_imports(path)):
            if _within(name, *forbidden) and not any(
                    where == known and _within(name, target) for known, target in KNOWN):
                yield f"{where} imports {name}"


def test_server_never_imports_textual_or_the_client() -> None:
    assert not list(_crossings("nai_server", "textual", "nai_tui"))


def test_core_is_pure() -> None:
    for path in (ROOT / "nai_server" / "core").rglob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top in CORE_ALLOWED, f"{path.relative_to(ROOT)} imports {name}"
            if top == "nai_server":
                assert name.startswith("nai_server.core"), f"{path.name} imports {name}"


def test_api_reaches_neither_store_nor_host() -> None:
    assert not list(_crossings("nai_server/api", "nai_server.store", "nai_server.host"))


def test_use_cases_know_no_http() -> None:
    assert not list(_crossings("nai_server/app", *HTTP))


def test_client_imports_only_the_protocol_from_the_server() -> None:
    for path in (ROOT / "nai_tui").rglob("*.py"):
        for name in _imports(path):
            if _within(name, "nai_server"):
                assert _within(name, "nai_server.protocol"), f"{path.relative_to(ROOT)}: {name}"


def test_tui_and_cli_never_import_each_other() -> None:
    assert not list(_crossings("nai_tui/tui", "nai_tui.cli"))
    assert not list(_crossings("nai_tui/cli", "nai_tui.tui"))


def test_known_crossings_are_still_there() -> None:
    """An exception that is no longer needed goes from KNOWN, so it cannot hide a new one."""
    for where, target in KNOWN:
        assert any(_within(n, target) for n in _imports(ROOT / where)), (where, target)
