"""`email`: a notifier that mails job events through an SMTP server.
    plugins: {email: {timeout: 10, options: {host: smtp.lab.example, port: 25,
                                             from: nai@lab.example, starttls: false,
                                             to: [ops@lab.example], events: [failed],
                                             user_domains: [lab.example]}}}
`to` gets every job's events (leave it out to serve users only). Users subscribe to
their own jobs' events with `nai notify add email me@lab.example`: one address, in one
of `user_domains` when the admin lists them. `username`/`password` log in, if given.
"""

from __future__ import annotations

import dataclasses
import json
import re
import smtplib
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from typing import Any

from nai_server.plugins.contracts import EVENTS, JobEvent, Refuse, hookimpl

# One plain address: no display name, no list, nothing a header could be split on.
ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}")


def message(event: JobEvent, sender: str, to: Sequence[str]) -> EmailMessage:
    code = f" (exit {event.exit_code})" if event.exit_code is not None else ""
    mail = EmailMessage()
    mail["Subject"] = f"nai: job {event.job_id} {event.name} {event.event}{code}"
    mail["From"], mail["To"] = sender, ", ".join(to)
    mail.set_content(f"Job {event.job_id} ({event.name}) of {event.user} {event.event}"
                     f"{code}.\n{event.message or ''}\n\n"
                     + json.dumps(dataclasses.asdict(event), indent=2, sort_keys=True))
    return mail


def send(options: Mapping[str, Any], event: JobEvent, to: Sequence[str]) -> None:
    """Mail `event` to `to` through `options.host`; an SMTP error raises (and is logged
    by the daemon)."""
    timeout = float(options.get("timeout", 10))
    with smtplib.SMTP(str(options.get("host", "localhost")), int(options.get("port", 25)),
                      timeout=timeout) as smtp:
        if options.get("starttls"):
            smtp.starttls()
        if options.get("username"):
            smtp.login(str(options["username"]), str(options.get("password", "")))
        smtp.send_message(message(event, str(options.get("from", "nai@localhost")), to))


@hookimpl
def nai_job_event(event: JobEvent, options: Mapping[str, Any]) -> None:
    """Mail the event to `options.to` if it is one of `events`."""
    to = options.get("to")
    if event.event not in (options.get("events") or EVENTS) or not to:
        return
    send(options, event, [to] if isinstance(to, str) else list(to))


@hookimpl
def nai_notify_check(target: str, options: Mapping[str, Any]) -> None:
    """A user's address: one plain address, in `user_domains` when the admin lists them."""
    if not ADDRESS.fullmatch(target):
        raise Refuse("give one plain address, e.g. me@lab.example")
    domains = options.get("user_domains")
    domain = target.rsplit("@", 1)[1].lower()
    if domains and domain not in {str(d).lower() for d in domains}:
        raise Refuse(f"this server mails addresses at {', '.join(map(str, domains))} only")


@hookimpl
def nai_notify_user(event: JobEvent, target: str, options: Mapping[str, Any]) -> None:
    """Mail one of the user's own job events to the address they subscribed."""
    send(options, event, [target])
