"""The command palette's entries (ctrl+p): every action bound on the current screen
and globally, every configured server, the datasets and models screens, and the jobs
(or datasets, models) on screen."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

Entry = tuple[str, Callable[[], Any], str]


class NaiCommands(Provider):
    """Actions come from the bindings, so a new binding is in the palette at once."""

    def entries(self) -> list[Entry]:
        from nai_tui.tui.app import NaiApp

        screen, app = self.screen, self.app
        found: list[Entry] = []
        seen: set[tuple[int, str]] = set()
        bound: set[str] = set()
        for active in screen.active_bindings.values():
            binding, node = active.binding, active.node
            title = binding.tooltip or binding.description
            if not title or not active.enabled or (id(node), binding.action) in seen:
                continue
            seen.add((id(node), binding.action))
            bound.add(binding.action)
            where = f"{screen.title}: " if node is not app and screen.title else ""
            found.append((f"{where}{title}", partial(app.run_action, binding.action, node),
                          f"key {app.get_key_display(binding)}"))
        if isinstance(app, NaiApp):
            for entry in [*app.config.servers.values()]:
                if entry.name != app.server.name:
                    found.append((f"Switch to server {entry.name}",
                                  partial(app.switch_server, entry), entry.url))
            for kind in ("dataset", "model"):
                if f"registry('{kind}')" not in bound:  # already there from a binding
                    found.append((f"Browse {kind}s", partial(app.open_registry, kind),
                                  f"push and pull {kind} versions"))
        more = getattr(screen, "commands", None)
        if callable(more):
            found += [(title, call, "") for title, call in more()]
        return found

    async def discover(self) -> Hits:
        for title, call, help_text in self.entries():
            yield DiscoveryHit(title, call, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, call, help_text in self.entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), call, help=help_text)
