"""Plugins (DESIGN §12): installable distributions found by their entry points, with
their contracts in `contracts`. `PluginHost` (in `host`) is what the daemon holds: the
registry of what was found, the chain of submit rules and the notifiers.

The names below are loaded on first use: the jobs that run plugins as their users
(`process_job`, `annotator_replica`) import modules of this package, and the daemon's
side (its config, the protocol, pydantic) cost a processing job ~0.25 s of start-up."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nai_server.plugins.host import CHOICES, PluginHost
    from nai_server.plugins.registry import PluginRegistry, PluginStatus

__all__ = ["CHOICES", "PluginHost", "PluginRegistry", "PluginStatus"]
_WHERE = {"CHOICES": "host", "PluginHost": "host", "PluginRegistry": "registry",
          "PluginStatus": "registry"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
