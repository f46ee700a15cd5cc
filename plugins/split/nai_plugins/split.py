"""`split`: a dataset processor that splits a dataset into train/val/test, the same way
every time for the same seed (`nai dataset process photos --with split -o seed=7`).

Options (all strings, from `-o key=value` over the admin's `plugins.split.options`):
    ratios   weights of the parts, "0.8,0.1,0.1" by default
    names    the parts' folder names, "train,val,test" by default
    seed     the shuffle's seed, "0" by default
    by       "files" (default): each file goes whole into one part, keeping its path
             under the part's folder; "rows": the rows of every .csv (its header kept
             in each part) and .jsonl file are split, other files are copied to every part
The parts' sizes follow the ratios exactly (rounded down, the rest to the first part).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nai_server.plugins.contracts import hookimpl

ROWS = (".csv", ".jsonl")


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


def _files(source: Path) -> list[str]:
    return sorted(str(p.relative_to(source)) for p in source.rglob("*")
                  if p.is_file() and not p.is_symlink())


def _copy(source: Path, rel: str, dest: Path) -> None:
    out = dest / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / rel, out)


@hookimpl
def nai_process_dataset(source: Path, target: Path,
                        options: Mapping[str, str]) -> Mapping[str, Any]:
    names, ratios = _parts(options)
    seed, by = options.get("seed", "0"), options.get("by", "files")
    if by not in ("files", "rows"):
        raise ValueError(f"by: files or rows, got {by!r}")
    counts = dict.fromkeys(names, 0)
    files = _files(source)
    if by == "files":
        for name, part in zip(names, cut(files, ratios, seed), strict=True):
            for rel in part:
                _copy(source, rel, target / name)
            counts[name] = len(part)
        return {"by": "files", "seed": seed, "files": counts}
    for rel in files:
        if not rel.endswith(ROWS):
            for name in names:
                _copy(source, rel, target / name)
            continue
        lines = (source / rel).read_text().splitlines(keepends=True)
        header = lines[:1] if rel.endswith(".csv") else []
        rows = [line for line in lines[len(header):] if line.strip()]
        for name, part in zip(names, cut(rows, ratios, f"{seed}:{rel}"), strict=True):
            out = target / name / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(header + [r if r.endswith("\n") else r + "\n"
                                             for r in part]))
            counts[name] += len(part)
    return {"by": "rows", "seed": seed, "rows": counts}
