"""A session whose saving fails unexpectedly (the disk full, the store refusing) is tried
again after a while, not at every step of the supervisor (twice a second): each try
reads the whole labels folder again (up to the output limit, 64 GiB by default) and
logs a traceback. Its labels stay where they are meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nai_server.config import load_config
from nai_server.core.processing import ANNOTATOR_KIND
from nai_server.daemon import bootstrap
from nai_server.testing import wait_for


def test_a_failing_save_is_not_retried_at_every_step(tmp_path: Path) -> None:
    cfg = load_config(None, mode="personal", state_dir=tmp_path / "state",
                      socket=tmp_path / "state" / "nai.sock", fake_gpus=0)
    svc = bootstrap(cfg)
    sessions = svc.annotating
    tries: list[str] = []

    def failing(doc: dict[str, Any]) -> Any:
        tries.append(doc["name"])
        raise OSError(28, "No space left on device")
    sessions._register = failing  # type: ignore[method-assign]
    doc = {"name": "s1", "number": 7, "kind": ANNOTATOR_KIND, "user": "me",
           "owner": {"user": "me"}, "state": "stopped", "replica_docs": [],
           "annotation": {"plugin": "labels", "to": "d", "dir": str(tmp_path / "x"),
                          "done": False, "saved": None}}
    try:
        with svc.services.lock:
            svc.services.records.put(doc)
        for _ in range(10):  # ten steps of the supervisor
            sessions.settle([doc])
            wait_for(lambda: not sessions._saving, timeout=10, what="the save tried")
        assert tries == ["s1"]
        with svc.services.lock:
            kept = svc.services.records.get("s1")
        assert kept is not None and not kept["annotation"]["done"]  # tried again later
    finally:
        svc.close()
