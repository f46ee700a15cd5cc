"""What a server's address may be, read without opening anything.

`nai server add` checks an address with `SshTarget.parse` before saving it, and the SSH
transports read it the same way, so a config written by hand (or before the check)
fails with the same words. Pure: no paramiko here, so checking costs no import."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from nai_server.protocol import ConnectionFailed

FORMS = ("ssh://user@host[:port], user@host[:port], an ~/.ssh/config alias, local "
         "(this machine's personal server) or local:/path/to/nai.sock")


@dataclass(frozen=True)
class SshTarget:
    """What the user typed: `ssh://user@host:port`, `user@host[:port]` or an alias."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> SshTarget:
        """The target, or ConnectionFailed saying which forms an address may take."""
        problem = "not an address"
        try:
            return cls._parse(text)
        except ValueError as exc:
            problem = str(exc)
        raise ConnectionFailed(f"cannot read {text!r} as a server address ({problem}): "
                               f"use {FORMS}")

    @classmethod
    def _parse(cls, text: str) -> SshTarget:
        if any(c.isspace() for c in text) or not text:
            raise ValueError("no spaces allowed" if text else "it is empty")
        if "://" in text:
            url = urlsplit(text)
            if url.scheme != "ssh":
                raise ValueError(f"{url.scheme}:// is not a way nai reaches a server")
            if url.path not in ("", "/") or url.query or url.fragment:
                raise ValueError("nothing may follow the host and port")
            try:
                port = url.port
            except ValueError:
                raise ValueError("the port is not a number from 1 to 65535") from None
            if not url.hostname:
                raise ValueError("no host")
            return cls(url.hostname, url.username or None,
                       None if port is None else _in_range(port))
        user, at, host = text.rpartition("@")
        if at and not user:
            raise ValueError("no user before '@'")
        port_text: str | None = None
        if host.startswith("[") and "]" in host:  # [v6-address]:port
            host, _, rest = host[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise ValueError("write [address]:port")
            port_text = rest[1:] if rest else None
        elif host.count(":") == 1:
            host, _, port_text = host.partition(":")
        if not host or "/" in host:
            raise ValueError("no host" if not host else "'/' in a host name")
        return cls(host, user or None, None if port_text is None else _port(port_text))


def _port(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"port {text!r} is not a number")
    return _in_range(int(text))


def _in_range(port: int) -> int:
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not between 1 and 65535")
    return port
