"""Install a plugin distribution the way pip lays one out (a module and a `.dist-info`
with its entry points) into a folder, for tests that put the folder on the path."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_dist(root: Path, dist: str, version: str, modules: Mapping[str, str],
               entry_points: Mapping[str, Mapping[str, str]]) -> Path:
    """Write `modules` (name → source) and `dist`'s metadata under `root`, which is
    made readable by all (a daemon and its users import from it); returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (root / f"{name}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in eps.items())
        for group, eps in entry_points.items()))
    for path in (root, *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def labels_site(request: Any, monkeypatch: Any, name: str, version: str) -> Path:
    """The first-party `labels` annotator offered as `name` by a distribution of
    `version`, as pip would install it, where users' processes can read it, and on the
    PYTHONPATH the daemon a test starts next inherits (removed after the test)."""
    site = write_dist(Path(tempfile.mkdtemp(prefix="nai-site-")), "nai-labels", version, {},
                      {"nai.annotators": {name: "nai_plugins.labels"}})
    request.addfinalizer(lambda: shutil.rmtree(site, ignore_errors=True))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(site), os.environ.get("PYTHONPATH")])))
    return site
