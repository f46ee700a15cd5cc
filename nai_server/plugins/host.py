"""`PluginHost`: what the daemon holds of its plugins: the registry of what was found,
the chain of submit rules and the notifiers."""

from __future__ import annotations

import dataclasses
from typing import Any

from nai_server.plugins.bounded import BoundedCalls
from nai_server.plugins.notifiers import Notifiers
from nai_server.plugins.registry import PluginRegistry, PluginStatus
from nai_server.plugins.submit_rules import SubmitRules
from nai_server.plugins.subscriptions import Subscriptions
from nai_server.protocol import NotFound

CHOICES = "plugin_choices"  # the store setting: {name: enabled} from nai-admin


class PluginHost:
    """The daemon's plugins at work."""

    def __init__(self, registry: PluginRegistry, store: Any, lock: Any) -> None:
        self.registry = registry
        self.store, self.lock = store, lock
        with lock:
            choices = dict(store.get_setting(CHOICES) or {})
        for name, enabled in choices.items():
            if registry.knows(name) and registry.choices.get(name) != enabled:
                registry.set_enabled(name, bool(enabled))
        self.calls = calls = BoundedCalls()
        self.rules = SubmitRules(registry, calls)
        self.notifiers = Notifiers(registry, calls)
        self.subscriptions = Subscriptions(registry, calls, store, lock)
        self.notifiers.users = self.subscriptions
        self.notifiers.observe(store)

    def statuses(self) -> list[PluginStatus]:
        """The registry's listing, with the calls of each plugin stuck right now."""
        return [dataclasses.replace(s, stuck=self.calls.stuck(s.name)) if s.state == "ok"
                else s for s in self.registry.statuses()]

    def set_enabled(self, name: str, enabled: bool) -> list[PluginStatus]:
        """Enable or disable an installed plugin now and at every later start (over the
        server config); its rows of the listing after."""
        if not self.registry.knows(name):
            raise NotFound(f"no plugin named {name!r} is installed; "
                           f"`nai-admin plugins` lists them")
        with self.lock:
            choices = dict(self.store.get_setting(CHOICES) or {})
            choices[name] = enabled
            self.store.set_setting(CHOICES, choices)
        self.registry.set_enabled(name, enabled)  # once the choice is committed
        return [s for s in self.statuses() if s.name == name]

    def close(self) -> None:
        self.notifiers.close()
