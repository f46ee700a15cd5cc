"""Where things live on this machine, for the server and (through `nai_server.protocol`)
the client: the standard library only, because `nai-server dial-stdio` (started for
every SSH connection) needs nothing more."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

# Per kind: the XDG variable, and the folder under $HOME when it is unset.
_XDG = {"config": ("XDG_CONFIG_HOME", ".config"), "cache": ("XDG_CACHE_HOME", ".cache"),
        "data": ("XDG_DATA_HOME", ".local/share")}


def user_dir(kind: Literal["config", "cache", "data", "runtime"]) -> Path:
    """This user's `nai` folder of `kind`, after the XDG base directory spec:
    $XDG_CONFIG_HOME/nai (else ~/.config/nai), $XDG_CACHE_HOME/nai (~/.cache/nai),
    $XDG_DATA_HOME/nai (~/.local/share/nai), $XDG_RUNTIME_DIR/nai (/tmp/nai-UID)."""
    if kind == "runtime":
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        return Path(runtime) / "nai" if runtime else Path(f"/tmp/nai-{os.getuid()}")
    variable, under_home = _XDG[kind]
    return Path(os.environ.get(variable) or Path.home() / under_home) / "nai"


def default_paths(mode: str) -> tuple[Path, Path]:
    """State dir and socket: system paths for a multi-user server, XDG paths otherwise."""
    if mode == "multi-user":
        return Path("/var/lib/nai"), Path("/run/nai/nai.sock")
    return user_dir("data"), user_dir("runtime") / "nai.sock"


def find_socket(explicit: Path | str | None = None) -> Path:
    """The socket a local tool talks to: --socket, $NAI_SOCKET, the system daemon's
    socket if there is one, else this user's personal daemon."""
    if explicit:
        return Path(explicit)
    if os.environ.get("NAI_SOCKET"):
        return Path(os.environ["NAI_SOCKET"])
    system = default_paths("multi-user")[1]
    if system.exists():
        return system
    return default_paths("personal")[1]
