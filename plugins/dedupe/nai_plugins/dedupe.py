"""`dedupe`: a dataset processor that drops duplicates by content
(`nai dataset process photos --with dedupe`).

Options (all strings, from `-o key=value` over the admin's `plugins.dedupe.options`;
`OPTIONS` says them in short, and the job refuses any other key, naming these):
    by   "files" (default): of files with the same bytes, the first by path is kept, at
         its path; "rows": also the repeated rows of every .csv (header kept) and
         .jsonl file are dropped, the first of each kept in order
The report says how many were kept and dropped, and names up to 100 dropped files.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nai_server.plugins.contracts import hookimpl

ROWS = (".csv", ".jsonl")
OPTIONS = {
    "by": "files: of files with the same bytes keep the first; rows: also drop repeated "
          "rows of .csv and .jsonl files (default files)",
}
NAMED = 100  # dropped files named in the report


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unique_rows(text: str, header: bool) -> tuple[str, int]:
    lines = text.splitlines(keepends=True)
    head, rows = (lines[:1], lines[1:]) if header else ([], lines)
    seen: set[str] = set()
    kept = []
    for row in rows:
        key = row.rstrip("\r\n")
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return "".join(head + kept), len(rows) - len(kept)


@hookimpl
def nai_plugin_options() -> Mapping[str, str]:
    """The options above: the job refuses any other key before any file is read."""
    return OPTIONS


@hookimpl
def nai_process_dataset(source: Path, target: Path,
                        options: Mapping[str, str]) -> Mapping[str, Any]:
    by = options.get("by", "files")
    if by not in ("files", "rows"):
        raise ValueError(f"by: files or rows, got {by!r}")
    seen: set[str] = set()
    dropped: list[str] = []
    kept = rows_dropped = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(source)
        digest = _digest(path)
        if digest in seen:
            dropped.append(str(rel))
            continue
        seen.add(digest)
        kept += 1
        out = target / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if by == "rows" and path.suffix in ROWS:
            text, gone = _unique_rows(path.read_text(), header=path.suffix == ".csv")
            out.write_text(text)
            rows_dropped += gone
        else:
            shutil.copyfile(path, out)
    report: dict[str, Any] = {"kept": kept, "dropped": len(dropped),
                              "dropped_files": dropped[:NAMED]}
    if by == "rows":
        report["dropped_rows"] = rows_dropped
    return report
