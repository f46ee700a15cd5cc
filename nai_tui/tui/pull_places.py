"""Where outputs are pulled, remembered per project (the job's name: the runs of one
experiment share it) in `pull-places.json` beside the client's config. A file that
cannot be read or written is ignored: the default place is used."""

from __future__ import annotations

import json
from pathlib import Path


class PullPlaces:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def folder(self, project: str, default: Path) -> Path:
        """The folder this project's outputs go under (each job in its own id folder)."""
        place = self._read().get(project)
        return Path(place) if place else default

    def remember(self, project: str, folder: Path) -> None:
        places = self._read()
        places[project] = str(folder)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(places, indent=1, sort_keys=True))
        except OSError:
            pass  # not remembered; the pull still goes where it was asked to
