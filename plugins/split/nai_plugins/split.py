"""`split`: a dataset processor that splits a dataset into train/val/test, the same way
every time for the same seed (`nai dataset process photos --with split -o seed=7`).

Options (all strings, from `-o key=value` over the admin's `plugins.split.options`;
`OPTIONS` says them in short, and the job refuses any other key, naming these):
    ratios   weights of the parts, "0.8,0.1,0.1" by default
    names    the parts' folder names, "train,val,test" by default
    seed     the shuffle's seed, "0" by default
    by       "files" (default): each file goes whole into one part, keeping its path
             under the part's folder; "rows": the rows of every .csv (its header kept
             in each part) and .jsonl file are split, other files are copied to every part
    stratify with by=rows, a column of the CSV files (a key of the JSONL rows): each of
             its values is split by the ratios on its own, so every part holds the
             labels in the same proportions; with by=files, "folder": the files of
             each top-level folder (one per class, as in photos/cat/1.png) likewise
The parts' sizes follow the ratios exactly (rounded down, the rest to the first part),
per label when stratified.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nai_server.plugins.contracts import hookimpl

ROWS = (".csv", ".jsonl")
OPTIONS = {
    "ratios": "weights of the parts, comma-separated (default 0.8,0.1,0.1)",
    "names": "the parts' folder names, comma-separated (default train,val,test)",
    "seed": "the shuffle's seed (default 0)",
    "by": "files: each file whole into one part; rows: the rows of .csv and .jsonl "
          "files (default files)",
    "stratify": "split each label on its own: with by=rows a CSV column (JSONL key), "
                "with by=files \"folder\" (each top-level folder) (default: none)",
}


def _parts(options: Mapping[str, str]) -> tuple[list[str], list[float]]:
    names = [n.strip() for n in options.get("names", "train,val,test").split(",")]
    try:
        ratios = [float(r) for r in options.get("ratios", "0.8,0.1,0.1").split(",")]
    except ValueError:
        raise ValueError(f"ratios: numbers separated by commas, e.g. 0.8,0.1,0.1; got "
                         f"{options.get('ratios')!r}") from None
    if len(names) != len(ratios) or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"give as many names as ratios, none negative (names {names}, "
                         f"ratios {ratios})")
    if len(set(names)) != len(names) or any(not n or "/" in n or n.startswith(".")
                                            for n in names):
        raise ValueError(f"names must be distinct folder names, got {names}")
    return names, ratios


def cut(items: Sequence[Any], ratios: Sequence[float], seed: str) -> list[list[Any]]:
    """`items` shuffled by `seed` and cut into parts sized by `ratios`."""
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    total = sum(ratios)
    sizes = [int(len(shuffled) * r / total) for r in ratios]
    sizes[0] += len(shuffled) - sum(sizes)
    parts, start = [], 0
    for size in sizes:
        parts.append(shuffled[start:start + size])
        start += size
    return parts


def stratified(items: Sequence[Any], label: Any, ratios: Sequence[float],
               seed: str) -> list[list[Any]]:
    """`cut` for each value of `label(item)` on its own, the parts joined (in the
    items' order), so each part holds every label in the ratios' proportions."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[str(label(item))].append(i)
    part_of: dict[int, int] = {}
    for value, indices in sorted(groups.items()):
        for n, part in enumerate(cut(indices, ratios, f"{seed}:{value}")):
            part_of.update((i, n) for i in part)
    parts: list[list[Any]] = [[] for _ in ratios]
    for i, item in enumerate(items):
        parts[part_of[i]].append(item)
    return parts


def _row_label(rel: str, header: list[str], column: str) -> Any:
    if rel.endswith(".csv"):
        fields = next(csv.reader(header))
        if column not in fields:
            raise ValueError(f"stratify: {rel} has no column {column!r} (it has {fields})")
        at = fields.index(column)
        return lambda row: (next(csv.reader([row])) + [""] * len(fields))[at]

    def key(row: str) -> Any:
        try:
            value = json.loads(row)
        except ValueError:
            raise ValueError(f"stratify: a row of {rel} is not JSON: {row[:80]!r}") from None
        return value.get(column, "") if isinstance(value, dict) else ""
    return key


def _files(source: Path) -> list[str]:
    return sorted(str(p.relative_to(source)) for p in source.rglob("*")
                  if p.is_file() and not p.is_symlink())


def _copy(source: Path, rel: str, dest: Path) -> None:
    out = dest / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / rel, out)


@hookimpl
def nai_plugin_options() -> Mapping[str, str]:
    """The options above: the job refuses any other key before splitting."""
    return OPTIONS


@hookimpl
def nai_process_dataset(source: Path, target: Path,
                        options: Mapping[str, str]) -> Mapping[str, Any]:
    names, ratios = _parts(options)
    seed, by = options.get("seed", "0"), options.get("by", "files")
    if by not in ("files", "rows"):
        raise ValueError(f"by: files or rows, got {by!r}")
    column = options.get("stratify", "")
    if by == "files" and column not in ("", "folder"):
        raise ValueError(f"stratify: with by=files only \"folder\" (the files of each "
                         f"top-level folder split on their own), got {column!r}")
    counts = dict.fromkeys(names, 0)
    files = _files(source)
    report: dict[str, Any] = {"by": by, "seed": seed, **({"stratify": column} if column else {})}
    if by == "files":
        parts = (stratified(files, lambda rel: rel.split("/")[0] if "/" in rel else "",
                            ratios, seed) if column else cut(files, ratios, seed))
        for name, part in zip(names, parts, strict=True):
            for rel in part:
                _copy(source, rel, target / name)
            counts[name] = len(part)
        return {**report, "files": counts}
    for rel in files:
        if not rel.endswith(ROWS):
            for name in names:
                _copy(source, rel, target / name)
            continue
        lines = (source / rel).read_text().splitlines(keepends=True)
        header = lines[:1] if rel.endswith(".csv") else []
        rows = [line for line in lines[len(header):] if line.strip()]
        parts = (stratified(rows, _row_label(rel, header, column), ratios, f"{seed}:{rel}")
                 if column else cut(rows, ratios, f"{seed}:{rel}"))
        for name, part in zip(names, parts, strict=True):
            out = target / name / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(header + [r if r.endswith("\n") else r + "\n"
                                             for r in part]))
            counts[name] += len(part)
    return {**report, "rows": counts}
