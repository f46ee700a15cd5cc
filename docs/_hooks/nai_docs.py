"""MkDocs hooks: the parts of the guide that are rendered from the code, so they cannot
drift from it.

A page asks for a rendered part with a marker on a line of its own:

    <!-- nai:openapi -->        the REST API, from the app's OpenAPI document
    <!-- nai:tui-keys -->       the terminal UI's keys, from the screens' bindings
    <!-- nai:help PROG -->      every command of `nai`, `nai-server` or `nai-admin`,
                                from its argparse parser
    <!-- nai:fairshare-defaults -->  the fair-share policy's knobs and their defaults

The OpenAPI document is built from `nai_server.api.create_app` in process (no daemon,
no socket) and also published with the site as `openapi.json`; run this file to print
it (`python docs/_hooks/nai_docs.py > openapi.json`). A guide page that
another part of the project owns but has not written yet (`metrics.md`) is stood in
for by a short placeholder, so the navigation builds either way.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # build from a checkout without installing it
    sys.path.insert(0, str(ROOT))

MARKER = re.compile(r"^<!-- nai:(?P<what>[a-z-]+)(?: (?P<arg>[a-z-]+))? -->$", re.M)
PLACEHOLDERS = {
    "metrics.md": "# Metrics\n\nHow a job's metrics are collected and shown is described "
                  "here in a later version of this guide. Meanwhile: each line of "
                  "`$NAI_METRICS_FILE` is a JSON object such as `{\"step\": 10, "
                  "\"loss\": 0.3}`, and `nai metrics ID` prints them.\n",
}
_cache: dict[str, Any] = {}


# --- the hooks --------------------------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for name, text in PLACEHOLDERS.items():
        if files.get_file_from_path(name) is None:
            files.append(File.generated(config, name, content=text))
    files.append(File.generated(config, "openapi.json",
                                content=json.dumps(openapi_document(), indent=1) + "\n"))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def render(match: re.Match[str]) -> str:
        what, arg = match["what"], match["arg"]
        if what == "openapi":
            return api_markdown(openapi_document())
        if what == "tui-keys":
            return tui_keys_markdown()
        if what == "help" and arg in PARSERS:
            return cli_markdown(arg)
        if what == "fairshare-defaults":
            return fairshare_markdown()
        raise ValueError(f"{page.file.src_uri}: unknown marker {match[0]!r}")

    return MARKER.sub(render, markdown)


# --- the REST API -----------------------------------------------------------------------


def openapi_document() -> dict[str, Any]:
    """`GET /openapi.json` as the daemon would answer it, from an app on a throwaway
    state directory."""
    if "openapi" not in _cache:
        from nai_server.api import create_app
        from nai_server.testing import make_service

        with tempfile.TemporaryDirectory(prefix="nai-docs-") as tmp:
            service = make_service(Path(tmp) / "state")
            try:
                _cache["openapi"] = create_app(service).openapi()
            finally:
                service.close()
    return _cache["openapi"]  # type: ignore[no-any-return]


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        kinds = [_type(s) for s in schema["anyOf"] if s.get("type") != "null"]
        return " or ".join(kinds) + (" or null" if len(kinds) < len(schema["anyOf"]) else "")
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if schema.get("format") == "binary":
        return "bytes"
    return str(kind)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def api_markdown(doc: dict[str, Any]) -> str:
    out: list[str] = ["## Error statuses\n", "| status | when |\n|---|---|"]
    statuses: dict[str, str] = {}
    for operations in doc["paths"].values():
        for op in operations.values():
            for status, answer in op["responses"].items():
                if status >= "400":
                    statuses.setdefault(status, _cell(answer["description"]))
    out += [f"| `{code}` | {text} |" for code, text in sorted(statuses.items())]
    out.append("")
    tags: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            tags.setdefault((op.get("tags") or ["other"])[0], []).append((method.upper(), path, op))
    for tag, operations in tags.items():
        out.append(f"## {tag}\n")
        for method, path, op in operations:
            out.append(f"### `{method} {path}`\n")
            out.append(f"**{op.get('summary', '')}.** {op.get('description', '')}".strip() + "\n")
            params = op.get("parameters") or []
            if params:
                out.append("| parameter | in | type | required |\n|---|---|---|---|")
                out += [f"| `{p['name']}` | {p['in']} | {_type(p.get('schema', {}))} | "
                        f"{'yes' if p.get('required') else 'no'} |" for p in params]
                out.append("")
            body = (op.get("requestBody") or {}).get("content") or {}
            for media, content in body.items():
                out.append(f"Body ({media}): {_type(content.get('schema', {}))}\n")
            answers, errors = [], []
            for status, answer in op["responses"].items():
                content = answer.get("content") or {}
                if status >= "400":
                    errors.append(f"`{status}`")
                    continue
                schema = next(iter(content.values()), {}).get("schema")
                shape = f" {_type(schema)}" if schema else ""
                media = ", ".join(content) or "no body"
                answers.append(f"`{status}` {_cell(answer['description'])} ({media}{shape})")
            out.append("Answers: " + "; ".join(answers) + ". Errors: " + ", ".join(errors)
                       + ".\n")
    out.append("## Schemas\n")
    for name, schema in doc["components"]["schemas"].items():
        out.append(f"### {name}\n")
        if schema.get("description"):
            out.append(schema["description"].split("\n\n")[0].replace("\n", " ") + "\n")
        props = schema.get("properties") or {}
        if props:
            required = set(schema.get("required") or ())
            out.append("| field | type | required |\n|---|---|---|")
            out += [f"| `{key}` | {_type(value)} | {'yes' if key in required else 'no'} |"
                    for key, value in props.items()]
            out.append("")
        elif "enum" in schema:
            out.append("One of " + ", ".join(f"`{v}`" for v in schema["enum"]) + ".\n")
    return "\n".join(out)


# --- the scheduler's knobs ------------------------------------------------------------


def fairshare_markdown() -> str:
    """`scheduler.fairshare` keys with their defaults, as the config file writes them."""
    import dataclasses
    import math

    from nai_server.core.sched_types import DEFAULT_TUNING
    from nai_server.core.units import format_duration

    durations = {"half_life", "age_max", "reserve_window", "reserve_after", "drain_hold",
                 "preempt_min_run", "las_threshold"}
    rows = []
    for f in dataclasses.fields(DEFAULT_TUNING):
        value = getattr(DEFAULT_TUNING, f.name)
        if isinstance(value, bool):
            shown = str(value).lower()
        elif isinstance(value, float) and math.isinf(value):
            shown = "`.inf` (none)"
        elif f.name in durations:
            shown = format_duration(int(value))
        else:
            shown = f"{value:g}"
        rows.append(f"| `{f.name}` | {shown} |")
    return "\n".join(["| key (under `scheduler.fairshare`) | default |", "|---|---|", *rows])


# --- the terminal UI's keys -------------------------------------------------------------


_KEY_NAMES = {"question_mark": "?", "slash": "/", "escape": "Esc", "enter": "Enter",
              "pageup": "PgUp", "pagedown": "PgDn", "home": "Home", "end": "End",
              "up": "↑", "down": "↓", "left": "←", "right": "→"}


def key_display(keys: str) -> str:
    """`ctrl+s` → `Ctrl+S`, `question_mark` → `?`, `n,escape` → `n` / `Esc`."""
    shown = []
    for key in keys.split(","):
        parts = key.strip().split("+")
        last = _KEY_NAMES.get(parts[-1], parts[-1])
        shown.append("+".join([p.capitalize() for p in parts[:-1]] + [last]))
    return " / ".join(f"`{k}`" for k in shown)


def _bindings(cls: type) -> list[Any]:
    from textual.binding import Binding

    found = []
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("nai_tui."):
            continue  # Textual's own (tab, copy, ...) work as everywhere in Textual
        for item in klass.__dict__.get("BINDINGS", ()):
            if isinstance(item, Binding):
                found.append(item)
            else:  # a (key, action, description) tuple
                found.append(Binding(*item))
    return found


def tui_classes() -> list[type]:
    """The app, then every screen and widget of `nai_tui.tui` with bindings of its own."""
    import nai_tui.tui.screens
    import nai_tui.tui.widgets
    from nai_tui.tui.app import NaiApp

    classes: list[type] = [NaiApp]
    for package in (nai_tui.tui.screens, nai_tui.tui.widgets):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == module.__name__ and cls.__dict__.get("BINDINGS"):
                    classes.append(cls)
    return classes


def _title(cls: type) -> str:
    title = cls.__dict__.get("TITLE")
    if isinstance(title, str) and title:
        return title
    name = re.sub(r"(Screen|App)$", "", cls.__name__) or cls.__name__
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)


def tui_keys_markdown() -> str:
    out = []
    for cls in tui_classes():
        rows, seen = [], set()
        for binding in _bindings(cls):
            what = binding.tooltip or binding.description
            if not what or binding.action in seen:
                continue
            seen.add(binding.action)
            rows.append(f"| {key_display(binding.key)} | {_cell(what)} |")
        heading = "Everywhere" if cls.__name__ == "NaiApp" else _title(cls)
        from textual.app import App
        from textual.screen import ModalScreen

        full_screen = not issubclass(cls, (App, ModalScreen))
        doc = (inspect.getdoc(cls) or "").split("\n")[0] if full_screen else ""
        out += [f"### {heading}\n", f"{doc}\n" if doc else "",
                "| key | what it does |\n|---|---|", *rows, ""]
    return "\n".join(out)


# --- the command lines ------------------------------------------------------------------


def _nai_parser() -> argparse.ArgumentParser:
    from nai_tui.cli import build_parser

    return build_parser()


def _server_parser() -> argparse.ArgumentParser:
    from nai_server.cli import build_parser

    return build_parser()


def _admin_parser() -> argparse.ArgumentParser:
    from nai_server.cli.admin import build_parser

    return build_parser()


PARSERS = {"nai": _nai_parser, "nai-server": _server_parser, "nai-admin": _admin_parser}
HIDDEN = {"dial-stdio"}  # run by SSH clients, not by people


def walk(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
         ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command of `parser` with the words that reach it, depth first."""
    found = [(words, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name not in HIDDEN:
                    found += walk(sub, (*words, name))
    return found


def cli_markdown(prog: str) -> str:
    out = []
    for words, parser in walk(PARSERS[prog]()):
        parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=88)
        title = " ".join((prog, *words))
        out += [f"### `{title}`\n", "```text", parser.format_help().rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":  # `python docs/_hooks/nai_docs.py > openapi.json`
    print(json.dumps(openapi_document(), indent=1))
