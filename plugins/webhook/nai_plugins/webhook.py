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
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import socket
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from nai_server.plugins.contracts import EVENTS, JobEvent, Refuse, hookimpl


def text(event: JobEvent) -> str:
    """One line a person reads in a chat channel."""
    code = f" (exit {event.exit_code})" if event.exit_code is not None else ""
    return f"nai: job {event.job_id} {event.name} of {event.user} {event.event}{code}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: it would send the event to a host nobody checked."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url: str, event: JobEvent, timeout: float) -> None:
    """POST the event to `url`; an HTTP error or a redirect raises (and is logged by the
    daemon)."""
    body = json.dumps({**dataclasses.asdict(event), "text": text(event)}).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=timeout) as answer:
        answer.read(1 << 16)


@hookimpl
def nai_job_event(event: JobEvent, options: Mapping[str, Any]) -> None:
    """POST the event to `options.url` if it is one of `events`."""
    if event.event not in (options.get("events") or EVENTS) or not options.get("url"):
        return
    post(options["url"], event, float(options.get("timeout", 5)))


def _inside(host: str, port: int | None, *, unknown_ok: bool) -> str | None:
    """Why `host` is not a public address (it is, or resolves to, a loopback, private,
    link-local or otherwise special one), or None. A name that does not resolve now
    passes when `unknown_ok` (at subscription: it is checked again at each delivery)."""
    try:
        found = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        return None if unknown_ok else f"cannot resolve {host}: {exc}"
    for *_, address in found:
        ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        if not ip.is_global or ip.is_multicast:
            return f"{host} is {ip}, not a public address"
    return None


def _check(target: str, options: Mapping[str, Any], *, delivering: bool) -> None:
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refuse("give an http:// or https:// URL")
    allowed = options.get("user_hosts")
    if allowed:
        if parts.hostname.lower() not in {str(h).lower() for h in allowed}:
            raise Refuse(f"this server sends to {', '.join(map(str, allowed))} only")
    elif why := _inside(parts.hostname, parts.port, unknown_ok=not delivering):
        raise Refuse(f"{why}; ask the admin to list the host in the webhook's user_hosts")


@hookimpl
def nai_notify_check(target: str, options: Mapping[str, Any]) -> None:
    """A user's URL: http or https, to a host the admin allows (`user_hosts`), else to
    a public address."""
    _check(target, options, delivering=False)


@hookimpl
def nai_notify_user(event: JobEvent, target: str, options: Mapping[str, Any]) -> None:
    """POST one of the user's own job events to the URL they subscribed, checked again
    (a name may resolve elsewhere by now)."""
    _check(target, options, delivering=True)
    post(target, event, float(options.get("timeout", 5)))
