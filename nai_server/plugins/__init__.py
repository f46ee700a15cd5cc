"""Plugins (DESIGN §12): installable distributions found by their entry points, with
their contracts in `contracts`. `PluginHost` is what the daemon holds: the registry of
what was found, the chain of submit rules and the notifiers."""

from __future__ import annotations

from typing import Any

from nai_server.plugins.bounded import BoundedCalls
from nai_server.plugins.notifiers import Notifiers
from nai_server.plugins.registry import PluginRegistry, PluginStatus
from nai_server.plugins.submit_rules import SubmitRules

__all__ = ["PluginHost", "PluginRegistry", "PluginStatus"]


class PluginHost:
    """The daemon's plugins at work."""

    def __init__(self, registry: PluginRegistry, store: Any) -> None:
        self.registry = registry
        calls = BoundedCalls()
        self.rules = SubmitRules(registry, calls)
        self.notifiers = Notifiers(registry, calls)
        self.notifiers.observe(store)

    def statuses(self) -> list[PluginStatus]:
        return self.registry.statuses()

    def close(self) -> None:
        self.notifiers.close()
