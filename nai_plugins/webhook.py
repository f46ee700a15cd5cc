"""`webhook`: a notifier that POSTs each job event as JSON to a URL, with a Slack-
compatible `text` field.
    plugins: {webhook: {timeout: 5, options: {url: https://hooks.example/T0/B0,
                                              events: [failed], timeout: 4}}}
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from collections.abc import Mapping
from typing import Any

from nai_server.plugins.contracts import EVENTS, JobEvent, hookimpl


def text(event: JobEvent) -> str:
    """One line a person reads in a chat channel."""
    code = f" (exit {event.exit_code})" if event.exit_code is not None else ""
    return f"nai: job {event.job_id} {event.name} of {event.user} {event.event}{code}"


@hookimpl
def nai_job_event(event: JobEvent, options: Mapping[str, Any]) -> None:
    """POST the event to `options.url` if it is one of `events`; an HTTP error raises
    (and is logged by the daemon)."""
    if event.event not in (options.get("events") or EVENTS):
        return
    body = json.dumps({**dataclasses.asdict(event), "text": text(event)}).encode()
    request = urllib.request.Request(options["url"], data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=float(options.get("timeout", 5))) as answer:
        answer.read(1 << 16)
