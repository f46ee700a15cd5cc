"""Listings take turns, and give way to `nai show`.

The daemon is one interpreter. A few clients looping on `nai jobs` kept it busy with
listings (each, even from the listing cache, some Python to run), and a `GET
/v1/jobs/{id}` arriving among them waited for every listing in progress: its p99 went to
4 times its idle p99. So, on the event loop, before a listing reaches a worker thread:
- it waits while a job's page (`GET /v1/jobs/{id}`) is being answered, at most
  MAX_YIELD (no stream of shows starves the listings);
- and listings are made one at a time (they only ever took turns for the one
  interpreter anyway): a show that arrives waits for one listing at most, not for all
  of them. The turn ends when the answer is made, not when it is sent.
Nothing else is held back.
"""

from __future__ import annotations

import asyncio
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_YIELD = 0.1  # seconds a listing waits for the shows in progress, at most
_LISTING = "/v1/jobs"
_POINT = re.compile(r"/v1/jobs/\d+")


class Turns:
    """ASGI middleware: listings one at a time, after the job pages in progress."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.points = 0  # job pages being answered now
        self._no_points: asyncio.Event | None = None
        self._listing: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
        elif scope["path"] == _LISTING:
            await self._listing_turn(scope, receive, send)
        elif _POINT.fullmatch(scope["path"]):
            await self._point(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _events(self) -> tuple[asyncio.Event, asyncio.Lock]:
        """The event and lock of the running loop (made on it: an app served by one
        loop after another, as tests do, gets fresh ones)."""
        loop = asyncio.get_running_loop()
        if self._no_points is None or self._listing is None or self._loop is not loop:
            self._loop = loop
            self._no_points, self._listing = asyncio.Event(), asyncio.Lock()
            self.points = 0
            self._no_points.set()
        return self._no_points, self._listing

    async def _point(self, scope: Scope, receive: Receive, send: Send) -> None:
        no_points, _ = self._events()
        self.points += 1
        no_points.clear()
        done = False

        async def sending(message: Message) -> None:
            nonlocal done
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done = self._point_ended(done)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._point_ended(done)

    def _point_ended(self, done: bool) -> bool:
        """Count a job page as answered, once (its last byte is sent, or it failed)."""
        if not done:
            self.points -= 1
            if self.points == 0 and self._no_points is not None:
                self._no_points.set()
        return True

    async def _listing_turn(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The turn covers the listing's work, not its sending: a client slow to read
        its answer holds no one else's listing back."""
        no_points, listing = self._events()
        await listing.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                listing.release()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                release()  # the answer is made: the next listing may start
            await send(message)

        try:
            if not no_points.is_set():
                try:
                    await asyncio.wait_for(no_points.wait(), MAX_YIELD)
                except TimeoutError:
                    pass
            await self.app(scope, receive, sending)
        finally:
            release()
