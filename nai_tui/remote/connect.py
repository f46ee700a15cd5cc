"""Reaching a configured server: its local socket, or SSH through one of the transports."""

from __future__ import annotations

from nai_server.protocol import ConnectionFailed
from nai_tui.config import ServerEntry, config_dir
from nai_tui.remote.client import ServerClient, local_http_client


def connect(entry: ServerEntry) -> ServerClient:
    """A client for the chosen server over its transport."""
    if entry.is_local:
        if not entry.socket.exists():
            raise ConnectionFailed(
                f"no nai server configured and none running on this machine "
                f"({entry.socket}); start one with `nai up`, or add yours with "
                f"`nai server add NAME ssh://user@host`")
        return ServerClient(local_http_client(entry.socket), name=entry.name)
    from nai_tui.remote import transports  # paramiko: only when a remote server is used

    http = transports.http_client_for(entry.url, transport=entry.transport,
                                      known_hosts=config_dir() / "known_hosts",
                                      remote_command=entry.remote_command, name=entry.name)
    return ServerClient(http, name=entry.name)
