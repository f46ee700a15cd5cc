"""The output helper stops reading a huge directory at the entry limit: the names of
a directory of millions of files never all sit in its memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nai_server.host import output_walk


def test_a_directory_past_the_limit_is_refused_before_it_is_read_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "output"
    (out / "many").mkdir(parents=True)
    for i in range(50):
        os.mkfifo(out / "many" / f"f{i}")  # skipped as outputs: only the reading counts
    read: list[str] = []
    real = os.scandir

    class Counting:
        def __init__(self, fd: Any) -> None:
            self.items = real(fd)

        def __enter__(self) -> Iterator[os.DirEntry[str]]:
            return self.gen()

        def gen(self) -> Iterator[os.DirEntry[str]]:
            for item in self.items:
                read.append(item.name)
                yield item

        def __exit__(self, *exc: object) -> None:
            self.items.close()

    monkeypatch.setattr(output_walk.os, "scandir", Counting)
    root = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(output_walk.Refused, match="more than 10 entries"):
            output_walk.listing(root, 10)
    finally:
        os.close(root)
    assert len([n for n in read if n.startswith("f")]) <= 11


def test_a_directory_at_the_limit_is_listed(tmp_path: Path) -> None:
    out = tmp_path / "output"
    out.mkdir()
    for i in range(10):
        (out / f"f{i:02d}").write_text("x")
    root = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        found = output_walk.listing(root, 10)
    finally:
        os.close(root)
    assert [e["path"] for e in found] == [f"f{i:02d}" for i in range(10)]
