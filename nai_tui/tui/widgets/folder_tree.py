"""`FolderTree`: a directory tree that shows folders only (hidden ones left out),
to pick a job's folder with the keyboard or the mouse."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual.widgets import DirectoryTree


class FolderTree(DirectoryTree):
    """Folders under `path`; selecting one posts `DirectoryTree.DirectorySelected`."""

    DEFAULT_CSS = """
    FolderTree {
        width: 1fr;
        min-width: 24;
    }
    """

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".") and _is_dir(p)]


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False
