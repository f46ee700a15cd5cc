"""`webhook`: a notifier that POSTs each job event as JSON to a URL, with a Slack-
compatible `text` field.
    plugins: {webhook: {timeout: 5, options: {url: https://hooks.example/T0/B0,
                                              events: [failed], timeout: 4,
                                              user_hosts: [hooks.slack.com]}}}
`url` receives every job's events (leave it out to serve users only). Users subscribe
to their own jobs' events with `nai notify add webhook URL`: an http(s) URL, on one
of `user_hosts` when the admin lists them. Without that list, a user's URL must name a
public address: the daemon would otherwise POST, from inside the network, to whatever
loopback, private or link-local address (a cloud's metadata service) a user names.
Each delivery resolves the host once, checks what it got, and connects to exactly
those addresses: a name that answers differently from one lookup to the next (DNS
rebinding) cannot slip an inside address past the check. Proxy variables are ignored
for the same reason (a proxy would look the name up again), and redirects are not
followed (they would lead to a host nobody checked).
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import json
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from nai_server.plugins.contracts import EVENTS, JobEvent, Refuse, hookimpl

MAX_ANSWER = 1 << 16  # bytes of the answer read before the connection is closed


def text(event: JobEvent) -> str:
    """One line a person reads in a chat channel."""
    code = f" (exit {event.exit_code})" if event.exit_code is not None else ""
    return f"nai: job {event.job_id} {event.name} of {event.user} {event.event}{code}"


class DeliveryFailed(Exception):
    """The webhook answered, but not with success (an HTTP error or a redirect)."""


class PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to `host` at addresses resolved (and checked) beforehand: the socket goes
    to one of `addresses`, never to a fresh lookup of the name, while the request
    still names `host` (its Host header)."""

    def __init__(self, host: str, port: int, addresses: Sequence[str],
                 timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.addresses = tuple(addresses)

    def connect(self) -> None:
        error: OSError = OSError(f"{self.host} has no address to connect to")
        for address in self.addresses:  # in the resolver's order, as a lookup would
            try:
                self.sock = socket.create_connection((address, self.port), self.timeout)
                return
            except OSError as exc:
                error = exc
        raise error


class PinnedHTTPSConnection(PinnedHTTPConnection):
    """HTTPS likewise: the TLS handshake names `host` (SNI) and its certificate must be
    valid for `host`, whichever address answered."""

    default_port = 443

    def __init__(self, host: str, port: int, addresses: Sequence[str], timeout: float,
                 context: ssl.SSLContext | None = None) -> None:
        super().__init__(host, port, addresses, timeout)
        self.context = context or ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host)


def _target(url: str) -> tuple[str, str, int]:
    """The URL's scheme, host and port, or Refuse saying what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refuse("give an http:// or https:// URL")
    try:
        port = parts.port
    except ValueError:
        raise Refuse("the URL's port must be a number from 1 to 65535") from None
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _resolve(host: str, port: int) -> list[str]:
    """Every address `host` names now (an IP literal names itself), each once."""
    found = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(address[0]) for *_, address in found))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: it would send the event to a host nobody checked."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None



def _body(event: JobEvent) -> bytes:
    return json.dumps({**dataclasses.asdict(event), "text": text(event)}).encode()


def post_admin(url: str, event: JobEvent, timeout: float) -> None:
    """POST the event to the admin's own `url`, as any program of the host would reach
    it: through `http_proxy`/`https_proxy` where they are set (a site may reach the
    internet only so). No user chose that URL, so no check of its addresses is needed;
    an HTTP error or a redirect still raises (and is logged by the daemon)."""
    _target(url)
    request = urllib.request.Request(url, data=_body(event), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "nai-webhook"})
    opener = urllib.request.build_opener(_NoRedirect)  # the proxy variables as they are now
    try:
        with opener.open(request, timeout=timeout) as answer:
            answer.read(MAX_ANSWER)
    except urllib.error.HTTPError as exc:
        host = urlsplit(url).hostname
        if 300 <= exc.code < 400:
            raise DeliveryFailed(f"{host} answered {exc.code} {exc.reason}, a redirect, "
                                 f"which is not followed: use the URL it leads to") from None
        raise DeliveryFailed(f"{host} answered {exc.code} {exc.reason}") from None


def post(url: str, event: JobEvent, timeout: float,
         addresses: Sequence[str] | None = None) -> None:
    """POST the event to a user's `url`, connecting to `addresses` (by default, those
    its host resolves to now) and to nothing else: no proxy, no redirect. An HTTP error
    or a redirect raises (and is logged by the daemon)."""
    scheme, host, port = _target(url)
    if addresses is None:
        addresses = _resolve(host, port)
    body = _body(event)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    kind = PinnedHTTPSConnection if scheme == "https" else PinnedHTTPConnection
    connection = kind(host, port, addresses, timeout)
    try:
        connection.request("POST", path, body=body,
                           headers={"Content-Type": "application/json",
                                    "User-Agent": "nai-webhook"})
        answer = connection.getresponse()
        answer.read(MAX_ANSWER)
    finally:
        connection.close()
    if 300 <= answer.status < 400:
        raise DeliveryFailed(f"{host} answered {answer.status} {answer.reason}, a "
                             f"redirect, which is not followed: use the URL it leads to")
    if not 200 <= answer.status < 300:
        raise DeliveryFailed(f"{host} answered {answer.status} {answer.reason}")


@hookimpl
def nai_job_event(event: JobEvent, options: Mapping[str, Any]) -> None:
    """POST the event to `options.url` if it is one of `events`."""
    if event.event not in (options.get("events") or EVENTS) or not options.get("url"):
        return
    post_admin(options["url"], event, float(options.get("timeout", 5)))


_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 in the last 32 bits
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 (SIIT): likewise
_NEVER_PUBLIC = (
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # RFC 8215: local-use NAT64, the site's own
    ipaddress.IPv6Network("2001::/32"),  # Teredo: a tunnel to whatever its IPv4s name
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated), :: and ::1 among them
)


def _public(ip: _IP) -> bool:
    """Whether `ip` is a public unicast address. An IPv6 address that carries an IPv4
    one (IPv4-mapped or -translated, NAT64, 6to4) is as public as the IPv4 address it
    leads to; a site-local one (deprecated, still routed inside some networks) is not."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_site_local or any(ip in net for net in _NEVER_PUBLIC):
            return False
        carried = ip in _NAT64 or ip in _TRANSLATED
        inner = ip.ipv4_mapped or ip.sixtofour or (
            ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF) if carried else None)
        if inner is not None:
            return _public(inner)
    return ip.is_global and not ip.is_multicast


def _check(target: str, options: Mapping[str, Any], *, delivering: bool) -> list[str]:
    """Refuse a user's URL the server may not send to; else the addresses to deliver
    to (none when not delivering and nothing needed resolving). A name that does not
    resolve at subscription passes: it is checked again at each delivery."""
    _, host, port = _target(target)
    allowed = options.get("user_hosts")
    if allowed and host.lower() not in {str(h).lower() for h in allowed}:
        raise Refuse(f"this server sends to {', '.join(map(str, allowed))} only")
    if allowed and not delivering:
        return []
    try:
        addresses = _resolve(host, port)
    except OSError as exc:
        if not delivering:
            return []
        raise Refuse(f"cannot resolve {host} ({exc.strerror or exc}); check the URL's "
                     f"host name, or remove the subscription (nai notify rm ID)") from None
    if not allowed:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if not _public(ip):
                raise Refuse(f"{host} is {ip}, not a public address; ask the admin to "
                             f"list the host in the webhook's user_hosts")
    return addresses


@hookimpl
def nai_notify_check(target: str, options: Mapping[str, Any]) -> None:
    """A user's URL: http or https, to a host the admin allows (`user_hosts`), else to
    a public address."""
    _check(target, options, delivering=False)


@hookimpl
def nai_notify_user(event: JobEvent, target: str, options: Mapping[str, Any]) -> None:
    """POST one of the user's own job events to the URL they subscribed, checked again
    (a name may resolve elsewhere by now) and sent to the very addresses checked."""
    addresses = _check(target, options, delivering=True)
    post(target, event, float(options.get("timeout", 5)), addresses)
