"""Users' notification subscriptions outlive a restart, are told only their owner's
events, and a user whose address hangs delays nobody else's notices."""

from __future__ import annotations

import threading
from pathlib import Path

from nai_server.config import PluginConfig
from nai_server.plugins import PluginRegistry
from nai_server.plugins.contracts import JobEvent, Kind, hookimpl
from nai_server.testing import make_service


class Recorder:
    def __init__(self) -> None:
        self.told: list[tuple[str, int, str]] = []
        self.gate = threading.Event()

    @hookimpl
    def nai_job_event(self, event, options):
        return None

    @hookimpl
    def nai_notify_user(self, event, target, options):
        if target == "slow":
            self.gate.wait(30)
        self.told.append((target, event.job_id, event.user))


def event(job_id: int, user: str) -> JobEvent:
    return JobEvent(event="failed", job_id=job_id, user=user, group=None, name="j",
                    state="failed", at=0.0)


def start(state: Path, recorder: Recorder):
    registry = PluginRegistry.from_objects({"rec": PluginConfig(timeout=0.3)},
                                           [("rec", Kind.NOTIFIER, recorder)])
    return make_service(state, plugins=registry)


def test_subscriptions_persist_and_reach_only_their_owner(tmp_path: Path) -> None:
    recorder = Recorder()
    service = start(tmp_path / "state", recorder)
    subs = service.plugins.subscriptions
    subs.add("ann", "rec", "ann-url", ["failed"])
    subs.add("slowpoke", "rec", "slow", ["failed"])
    service.close()

    service = start(tmp_path / "state", recorder)  # kept in the store
    subs, notifiers = service.plugins.subscriptions, service.plugins.notifiers
    assert [(s.user, s.target) for s in subs.of("ann")] == [("ann", "ann-url")]
    try:
        for job_id, user in ((1, "slowpoke"), (2, "bob"), (3, "ann"), (4, "slowpoke"),
                             (5, "ann")):
            notifiers.put(event(job_id, user))
        assert notifiers.drain(20)
        # Slowpoke's hung address cost one timeout, then was skipped; ann was told.
        assert [t for t in recorder.told if t[0] == "ann-url"] == [
            ("ann-url", 3, "ann"), ("ann-url", 5, "ann")]
    finally:
        recorder.gate.set()
        service.close()
