"""`notify_file`: a notifier that appends one JSON line per job event to a file, for a
log shipper or a script to follow.
    plugins: {notify_file: {options: {path: /var/log/nai/events.jsonl,
                                      events: [failed, succeeded]}}}
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from nai_server.plugins.contracts import EVENTS, JobEvent, hookimpl


@hookimpl
def nai_job_event(event: JobEvent, options: Mapping[str, Any]) -> None:
    """Append the event to `options.path` (created 0600), if it is one of `events`."""
    if event.event not in (options.get("events") or EVENTS):
        return
    line = json.dumps(dataclasses.asdict(event), sort_keys=True) + "\n"
    fd = os.open(options["path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
