"""A user's own notifications on the wire: `/v1/notify` (`nai notify`)."""

from __future__ import annotations

from pydantic import Field

from nai_server.protocol.base import NAME_PATTERN, Model, Reply

NOTIFY_EVENTS = ("started", "succeeded", "failed", "preempted", "cancelled")


class NotifyCreate(Model):
    """Be told of your own jobs' `events`, sent by notifier plugin `via` to `target`
    (for `webhook`, a URL)."""

    via: str = Field(pattern=NAME_PATTERN, max_length=64)
    target: str = Field(min_length=1, max_length=2048)
    events: list[str] = Field(default_factory=lambda: ["succeeded", "failed"],
                              min_length=1, max_length=len(NOTIFY_EVENTS))


class NotifyInfo(Reply):
    id: int
    via: str
    target: str
    events: list[str]
