"""`GET /v1/usage`: each user's and group's GPU use, fair-share standing and quota use
(what `sshare` shows). A function of its own beside `ServerClient`, which it uses."""

from __future__ import annotations

from nai_server.protocol.usage import UsageReport
from nai_tui.remote.client import ServerClient


def read_usage(client: ServerClient) -> UsageReport:
    """The server's usage report (NotFound from a server older than the route)."""
    return client._reply(UsageReport, client._json("GET", "/v1/usage"))
