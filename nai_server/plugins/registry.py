"""Finding plugins: the entry points of `contracts.GROUPS`, loaded and registered with
one pluggy manager per kind. A plugin that fails to import, or does not implement its
kind's hook, is recorded as broken with the error; the daemon starts all the same."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from nai_server.config import PluginConfig
from nai_server.plugins.contracts import AS_JOB, GROUPS, HOOKS, IN_DAEMON, PROJECT, SPECS, Kind

log = logging.getLogger("nai.plugins")

MAX_ERROR = 500  # characters of an import error kept for the listing


@dataclass(frozen=True)
class PluginStatus:
    """One row of `nai-admin plugins`. state: ok (loaded and enabled), disabled (not
    enabled in the server config), broken (see error), unsupported (a kind this
    server does not run yet), missing (configured but not installed)."""

    name: str
    kind: str
    version: str | None
    state: str
    error: str | None = None
    required: bool = False
    stuck: int = 0  # calls still running past their timeout (see bounded.py)


@dataclass(frozen=True)
class Hook:
    """One enabled plugin's implementation of its kind's hook."""

    name: str
    config: PluginConfig
    function: Callable[..., Any]
    argnames: tuple[str, ...]

    def __call__(self, **kwargs: Any) -> Any:
        """Call with the arguments the implementation asks for (pluggy lets an
        implementation take fewer than its specification offers)."""
        return self.function(*(kwargs[a] for a in self.argnames))


class PluginRegistry:
    """The plugins this daemon found, and the hooks of those that are enabled."""

    def __init__(self, config: Mapping[str, PluginConfig]) -> None:
        self.config = dict(config)
        self._statuses: list[PluginStatus] = []
        self._managers = {kind: _manager(kind) for kind in IN_DAEMON}
        # (name, kind) → (load, version), to load a plugin enabled later.
        self._found: dict[tuple[str, Kind], tuple[Callable[[], object], str | None]] = {}
        self.choices: dict[str, bool] = {}  # `nai-admin plugin enable|disable`, persisted
        self._effective: dict[str, PluginConfig] = {}
        self.generation = 0  # bumped whenever the set of enabled hooks changes
        self._lock = threading.RLock()

    def effective(self, name: str) -> PluginConfig | None:
        """The plugin's config if it is enabled: the admin's persisted choice, else
        the server config's section (whose `enabled` defaults to true)."""
        cfg, choice = self.config.get(name), self.choices.get(name)
        if choice is False:
            return None
        if choice is True:
            return cfg.model_copy(update={"enabled": True}) if cfg else PluginConfig()
        return cfg if cfg is not None and cfg.enabled else None

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Enable or disable an installed plugin now (loading it if need be)."""
        with self._lock:
            mine = [(k, v) for k, v in self._found.items() if k[0] == name]
            if not mine:
                raise KeyError(name)
            self.choices[name] = enabled
            self._statuses = [s for s in self._statuses if s.name != name]
            self._effective.pop(name, None)
            for (_, kind), (load, version) in mine:
                manager = self._managers.get(kind)
                if manager is not None and manager.has_plugin(name):
                    manager.unregister(name=name)
                self.add(name, kind, load, version)
            self.generation += 1

    def knows(self, name: str) -> bool:
        """Whether `name` is an installed plugin of a kind the daemon runs or lists."""
        return any(n == name for n, _ in self._found)

    def installed(self, kind: Kind) -> bool:
        return any(k == kind for _, k in self._found)

    @classmethod
    def empty(cls) -> PluginRegistry:
        return cls({})

    @classmethod
    def discover(cls, config: Mapping[str, PluginConfig],
                 choices: Mapping[str, bool] | None = None) -> PluginRegistry:
        """The installed plugins (entry points), loading only the enabled ones
        (`choices`: the admin's persisted enable/disable, over the config)."""
        registry = cls(config)
        registry.choices = {str(k): bool(v) for k, v in (choices or {}).items()}
        for kind, group in GROUPS.items():
            for ep in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
                version = ep.dist.version if ep.dist is not None else None
                registry.add(ep.name, kind, ep.load, version)
        registry.note_missing()
        return registry

    @classmethod
    def from_objects(cls, config: Mapping[str, PluginConfig],
                     objects: Iterable[tuple[str, Kind, object]]) -> PluginRegistry:
        """Plugins given as objects rather than found (tests, embedding)."""
        registry = cls(config)
        for name, kind, obj in objects:
            registry.add(name, kind, _given(obj), None)
        registry.note_missing()
        return registry

    def add(self, name: str, kind: Kind, load: Callable[[], object],
            version: str | None) -> None:
        """Record one plugin; load and register it when the config enables it."""
        if kind in IN_DAEMON or kind in AS_JOB:
            self._found[(name, kind)] = (load, version)
        cfg = self.effective(name)
        if cfg is not None:
            self._effective[name] = cfg

        def record(state: str, error: str | None = None) -> None:
            self._statuses.append(PluginStatus(name=name, kind=kind.value, version=version,
                                               state=state, error=error,
                                               required=bool(cfg and cfg.required)))

        if kind in AS_JOB:  # never imported here: the user's job loads it
            record("ok" if cfg is not None else "disabled")
        elif kind not in IN_DAEMON:
            record("unsupported", f"this server does not run {kind.value} plugins yet")
        elif cfg is None:
            record("disabled")
        else:
            try:
                self._register(name, kind, load())
            except (Exception, SystemExit) as exc:
                error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
                log.error("plugin %s (%s) is broken and will not be used: %s", name,
                          kind.value, error)
                record("broken", error)
            else:
                record("ok")

    def _register(self, name: str, kind: Kind, obj: object) -> None:
        manager = self._managers[kind]
        if manager.has_plugin(name):
            raise ValueError(f"another {kind.value} plugin is already named {name!r}")
        manager.register(obj, name=name)
        caller = getattr(manager.hook, HOOKS[kind])
        if not any(impl.plugin_name == name for impl in caller.get_hookimpls()):
            manager.unregister(name=name)
            raise ValueError(f"it implements no {HOOKS[kind]} hook (mark it with "
                             f"nai_server.plugins.contracts.hookimpl)")

    def note_missing(self) -> None:
        """List the plugins the config names that are not installed."""
        found = {s.name for s in self._statuses}
        for name, cfg in sorted(self.config.items()):
            if name not in found:
                log.warning("plugins.%s is configured, but no such plugin is installed", name)
                self._statuses.append(PluginStatus(
                    name=name, kind="-", version=None, state="missing",
                    error="configured in plugins.NAME but not installed (pip install it "
                          "into the server's environment)", required=cfg.required))

    def as_job(self, kind: Kind, name: str) -> tuple[PluginConfig, str | None] | None:
        """An enabled plugin of a kind run as the user's job: its config and version."""
        with self._lock:
            found = self._found.get((name, kind))
            cfg = self._effective.get(name)
            if found is None or cfg is None or kind not in AS_JOB:
                return None
            return cfg, found[1]

    def statuses(self) -> list[PluginStatus]:
        with self._lock:
            return sorted(self._statuses, key=lambda s: (s.name, s.kind))

    def hooks(self, kind: Kind, hook: str | None = None) -> list[Hook]:
        """The enabled plugins' implementations of `kind`'s hook (or of another of its
        contract's hooks, `hook`), in name order."""
        manager = self._managers.get(kind)
        if manager is None:
            return []
        with self._lock:
            impls = getattr(manager.hook, hook or HOOKS[kind]).get_hookimpls()
            return sorted((Hook(i.plugin_name, self._effective[i.plugin_name], i.function,
                                tuple(i.argnames)) for i in impls), key=lambda h: h.name)


def _manager(kind: Kind) -> pluggy.PluginManager:
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(SPECS[kind])
    return manager


def _given(obj: object) -> Callable[[], object]:
    return lambda: obj
