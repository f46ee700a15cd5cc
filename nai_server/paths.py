"""Where a server keeps its state and socket: the standard library only, because
`nai-server dial-stdio` (started for every SSH connection) needs nothing more."""

from __future__ import annotations

import os
from pathlib import Path


def default_paths(mode: str) -> tuple[Path, Path]:
    """State dir and socket: system paths for a multi-user server, XDG paths otherwise."""
    if mode == "multi-user":
        return Path("/var/lib/nai"), Path("/run/nai/nai.sock")
    home = Path.home()
    data = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    run_dir = Path(runtime) / "nai" if runtime else Path(f"/tmp/nai-{os.getuid()}")
    return data / "nai", run_dir / "nai.sock"


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
