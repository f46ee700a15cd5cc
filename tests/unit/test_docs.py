"""The user guide (docs/) cannot drift from the code: it builds with `mkdocs build
--strict`, every `nai`, `nai-server` and `nai-admin` command line it (or the README)
shows parses with the real parser, and every spec key, job variable, waiting reason,
server setting and policy is described."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from nai_server.cli import build_parser as server_parser
from nai_server.cli.admin import build_parser as admin_parser
from nai_server.config import ServerConfig
from nai_server.core.env import build_job_env
from nai_server.core.sched_types import DEFAULT_TUNING, WaitReason
from nai_server.core.scheduling import POLICIES
from nai_server.core.spec import FIELDS
from nai_tui.cli import build_parser as nai_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "nai": nai_parser, "nai-server": server_parser, "nai-admin": admin_parser}
# Words the guide writes for "put yours here" in running text; as a command line's
# argument each reads as the example value beside it.
PLACEHOLDERS = {"ID": "12", "N": "2"}
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`(?P<code>(?:nai|nai-server|nai-admin) [^`]+)`(?!`)")


def _pages() -> list[Path]:
    return [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


def _commands_in(text: str) -> Iterator[tuple[str, bool]]:
    """(command line, from a code block) for each nai command the page shows."""
    for block in FENCE.finditer(text):
        if block["lang"] not in ("sh", "bash", "shell", "console", ""):
            continue
        joined = re.sub(r"\\\n\s*", " ", block["body"])  # continuation lines
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ").removeprefix("sudo ")
            if re.match(r"(nai|nai-server|nai-admin)(\s|$)", line):
                yield line, True
    prose = FENCE.sub("", text)
    for span in INLINE.finditer(prose.replace("\n", " ")):
        yield span["code"], False


FD_REDIRECT = re.compile(r"(?<![\w-])\d+>&\d+|(?<![\w-])\d+>>?\s*[^\s;&|]+")


def _segments(line: str) -> list[list[str]]:
    """The words of each command of a line: comments and redirections dropped, split at
    `;`, `&&`, `||` and pipes (`nai show 12; nai logs 12 -f` is two commands)."""
    line = FD_REDIRECT.sub(" ", line)  # `2>/dev/null`, `2>&1`: a descriptor's redirection
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    segments: list[list[str]] = [[]]
    redirect = False
    for word in lexer:
        if redirect:  # the file of `> out.csv`
            redirect = False
        elif word in (";", "&&", "|", "||", "&"):
            segments.append([])
        elif word.strip("&") in ("<", ">", ">>"):
            redirect = True
        else:
            segments[-1].append(word)
    return [words for words in segments if words and words[0] in PARSERS]


def _problem(words: list[str], parser: argparse.ArgumentParser, *,
             whole: bool = True) -> str | None:
    """Why argparse refuses `words`, or None if it takes them. Not `whole`: a command
    named in running text (`nai pull`) may leave out its required arguments, but its
    words and flags must exist."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(words)
    except SystemExit as exc:
        if exc.code not in (0, None):
            why = errors.getvalue().strip().splitlines()[-1]
            if whole or not re.search(r" (is|are) required(:|$)", why):
                return why
    return None


def shown_commands() -> list[tuple[str, str, list[str], bool]]:
    """(page, line, words, from a code block) for every command line of the guide."""
    found = []
    for page in _pages():
        for line, in_block in _commands_in(page.read_text()):
            for words in _segments(line):
                if not in_block:
                    words = [PLACEHOLDERS.get(w, w) for w in words]
                if "--help" in words or "-h" in words or "--version" in words:
                    continue
                found.append((page.name, line, words, in_block))
    return found


def test_the_guide_shows_commands_of_each_program() -> None:
    programs = {words[0] for _, _, words, _ in shown_commands()}
    assert programs == set(PARSERS)
    assert len(shown_commands()) > 50


def test_every_command_line_in_the_guide_parses() -> None:
    refused = []
    for page, line, words, in_block in shown_commands():
        why = _problem(words[1:], PARSERS[words[0]](), whole=in_block)
        if why is not None:
            refused.append(f"{page}: `{line}`: {why}")
    assert not refused, "\n".join(refused)


def test_a_command_the_parser_refuses_is_caught() -> None:
    text = ("```sh\nnai submit . --gpsu 2  # a typo\n"
            "nai jobs --mine | head; nai gpus --json > gpus.json\n```\n")
    lines = [words for line, _ in _commands_in(text) for words in _segments(line)]
    assert lines == [["nai", "submit", ".", "--gpsu", "2"], ["nai", "jobs", "--mine"],
                     ["nai", "gpus", "--json"]]
    assert _problem(lines[0][1:], nai_parser()) is not None
    assert _problem(lines[1][1:], nai_parser()) is None
    # Named in running text, a command may leave out its arguments, not misname them.
    assert _problem(["pull"], nai_parser(), whole=False) is None
    assert _problem(["pull"], nai_parser()) is not None
    assert _problem(["pul"], nai_parser(), whole=False) is not None


def _spec_page() -> str:
    return (DOCS / "job-spec.md").read_text()


def test_every_spec_key_is_described() -> None:
    described = set(re.findall(r"^\| `(\w+)` \|", _spec_page(), re.M))
    assert set(FIELDS) - described == set()


def test_every_variable_a_job_gets_is_described() -> None:
    env = build_job_env(job_id=1, job_dir="/state/jobs/1", gpu_indices=(0,), user_env={},
                        base_env={}, dataset_dir="/d", model_dir="/m")
    described = set(re.findall(r"^\| `([A-Z_]+)`", _spec_page(), re.M))
    assert set(env) - described == set()


def test_every_reason_a_job_waits_for_is_described() -> None:
    page = (DOCS / "scheduling.md").read_text()
    assert {str(r) for r in WaitReason} - set(re.findall(r"^\| `(\w+)` \|", page, re.M)) == set()


def _config_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, info in model.model_fields.items():
        inner = info.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel) and name != "fairshare":
            yield from _config_keys(inner, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_every_server_setting_and_policy_is_described() -> None:
    server = (DOCS / "server.md").read_text()
    missing = [key for key in _config_keys(ServerConfig)
               if f"`{key.rsplit('.', 1)[-1]}`" not in server]
    assert missing == []
    scheduling = (DOCS / "scheduling.md").read_text()
    assert [p for p in POLICIES if f"| `{p}`" not in scheduling] == []


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None
                    or importlib.util.find_spec("material") is None,
                    reason="mkdocs-material is not installed (pip install -e '.[docs]')")
def test_the_guide_builds_without_a_warning(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
         "--config-file", str(ROOT / "mkdocs.yml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    site = tmp_path / "site"
    api = (site / "api" / "index.html").read_text()
    assert "/v1/jobs/{job_id}/logs" in api
    assert '"openapi"' in (site / "openapi.json").read_text()
    knobs = (site / "scheduling" / "index.html").read_text()
    assert all(f"<code>{f.name}</code>" in knobs for f in dataclasses.fields(DEFAULT_TUNING))
    keys = (site / "tui" / "index.html").read_text()
    assert "Submit a folder as a new job" in keys
    assert "nai dataset push" in (site / "commands" / "index.html").read_text()
