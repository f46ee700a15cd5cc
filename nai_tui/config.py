"""The client's configuration: named servers, the default one, the transport.

Kept in `$XDG_CONFIG_HOME/nai/config.yaml`:

    default: lab
    servers:
      lab: {url: "ssh://alice@gpu1.example.org", transport: ssh}
      box: {url: "gpubox"}               # an ~/.ssh/config alias
      here: {url: local}                 # the personal daemon on this machine
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nai_server.protocol import ConnectionFailed, NaiError, default_paths, user_dir
from nai_tui.remote.target import SshTarget

TRANSPORTS = ("ssh", "openssh")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_REMOTE_COMMAND = "nai-server dial-stdio"
# The name of this machine's personal server (`nai up`): built in, like docker's
# `default` context, so adding a remote server never takes it away. A configured
# server of this name (local:/other.sock) stands in its place.
PERSONAL = "local"


class ConfigError(NaiError):
    """The client config is wrong; the message names the file and the fix."""


def config_dir() -> Path:
    return user_dir("config")


def cache_dir() -> Path:
    return user_dir("cache")


def personal_socket() -> Path:
    """Where `nai-server run --personal` listens by default (the server's own rule)."""
    return default_paths("personal")[1]


def personal_state() -> Path:
    """Where a personal daemon keeps its state by default (the server's own rule)."""
    return default_paths("personal")[0]


@dataclass
class ServerEntry:
    """One configured server."""

    name: str
    url: str  # ssh://user@host[:port], an ~/.ssh/config alias, user@host, local[:/socket]
    transport: str = "ssh"
    remote_command: str = DEFAULT_REMOTE_COMMAND

    @property
    def is_local(self) -> bool:
        return self.url == "local" or self.url.startswith("local:")

    @property
    def socket(self) -> Path:
        return Path(self.url[len("local:"):]) if self.url.startswith("local:") else (
            personal_socket())

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"url": self.url}
        if self.transport != "ssh":
            data["transport"] = self.transport
        if self.remote_command != DEFAULT_REMOTE_COMMAND:
            data["remote_command"] = self.remote_command
        return data


@dataclass
class ClientConfig:
    path: Path
    servers: dict[str, ServerEntry] = field(default_factory=dict)
    default: str | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> ClientConfig:
        path = path or config_dir() / "config.yaml"
        if not path.exists():
            return cls(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the client config: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping with 'servers' and 'default'")
        unknown = set(data) - {"servers", "default"}
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; "
                              f"allowed: servers, default")
        servers = {}
        for name, raw in (data.get("servers") or {}).items():
            if isinstance(raw, str):
                raw = {"url": raw}
            if not isinstance(raw, dict) or "url" not in raw:
                raise ConfigError(f"{path}: servers.{name} needs a url")
            extra = set(raw) - {"url", "transport", "remote_command"}
            if extra:
                raise ConfigError(f"{path}: servers.{name}: unknown key(s) {sorted(extra)}")
            servers[str(name)] = ServerEntry(str(name), **raw)
        default = data.get("default")
        if default is not None and default not in servers and default != PERSONAL:
            raise ConfigError(f"{path}: default server {default!r} is not among the servers")
        if default is None and servers:
            default = PERSONAL  # what choose() picks, and what save() leaves unwritten
        return cls(path, servers, default)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {"servers": {n: s.to_dict() for n, s in self.servers.items()}}
        # The built-in `local` as the default is written as no default at all: a `nai`
        # older than the built-in refuses a default that is not among the servers (on
        # every command), and without one it, as this one, picks the personal server.
        if self.default in self.servers:
            data["default"] = self.default
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=True))
        tmp.replace(self.path)

    def add(self, entry: ServerEntry, *, make_default: bool = False) -> None:
        """Record `entry`; the first one added becomes the default (`local`, the
        personal server, stays reachable by name)."""
        if not NAME_RE.fullmatch(entry.name):  # `$` alone lets "lab\n" through
            raise ConfigError(f"server name {entry.name!r}: use letters, digits, . _ -")
        if entry.name == "auto":  # `--server auto` picks among the servers
            raise ConfigError("server name 'auto' is taken by `nai submit --server auto`; "
                              "choose another name")
        if entry.name == PERSONAL and not entry.is_local:
            raise ConfigError(f"server name {PERSONAL!r} means this machine's personal "
                              f"server (`nai up`); choose another name")
        if entry.transport not in TRANSPORTS:
            raise ConfigError(f"transport {entry.transport!r}: one of {', '.join(TRANSPORTS)}")
        if entry.is_local:
            if entry.url == "local:":
                raise ConfigError("url 'local:': give the socket, as local:/path/to/nai.sock")
        else:
            try:
                SshTarget.parse(entry.url)
            except ConnectionFailed as exc:
                raise ConfigError(str(exc)) from None
        if entry.name in self.servers:
            raise ConfigError(f"server {entry.name!r} exists; `nai server remove "
                              f"{entry.name}` first to change it")
        self.servers[entry.name] = entry
        if make_default or self.default is None:
            self.default = entry.name

    def remove(self, name: str) -> None:
        if name == PERSONAL and name not in self.servers:
            raise ConfigError(f"{PERSONAL!r} is this machine's personal server, built in: "
                              f"nothing to remove (`nai down` stops it)")
        self.get(name)
        del self.servers[name]
        if self.default == name:
            self.default = next(iter(self.servers), None)

    def get(self, name: str) -> ServerEntry:
        if name in self.servers:
            return self.servers[name]
        if name == PERSONAL:
            return ServerEntry(PERSONAL, "local")
        known = ", ".join(self.servers) or "none yet"
        raise ConfigError(f"no server named {name!r} (configured: {known}; {PERSONAL!r} is "
                          f"this machine's personal server; add one with "
                          f"`nai server add NAME ssh://user@host`)")

    def choose(self, name: str | None = None) -> ServerEntry:
        """--server NAME, else $NAI_SERVER, else the default, else this machine's
        personal daemon (what `nai up` starts)."""
        name = name or os.environ.get("NAI_SERVER") or self.default
        return self.get(name or PERSONAL)
