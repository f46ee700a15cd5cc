"""Listings take turns and give way to job pages (`nai_server.api.turns`): a listing
waits while a `GET /v1/jobs/{id}` is answered, listings are made one at a time, a
client slow to read its listing holds no other back, and nothing else waits."""

from __future__ import annotations

import asyncio
from typing import Any

from nai_server.api import turns
from nai_server.api.turns import Turns


class App:
    """An inner app whose answers wait for the test to let each one go."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        name = scope["name"]
        self.started.append(name)
        await self.gates.setdefault(name, asyncio.Event()).wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def call(turn: Turns, name: str, path: str, send: Any = None,
         method: str = "GET") -> asyncio.Task[None]:
    async def sent(message: Any) -> None:
        pass

    scope = {"type": "http", "method": method, "path": path, "name": name}
    return asyncio.ensure_future(turn(scope, None, send or sent))  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def go(app: App, name: str) -> None:
    app.gates.setdefault(name, asyncio.Event()).set()


def test_a_listing_waits_for_the_job_pages_in_progress() -> None:
    async def scenario() -> None:
        app = App()
        turn = Turns(app)
        show = call(turn, "show", "/v1/jobs/12")
        await settle()
        listing = call(turn, "list", "/v1/jobs")
        other = call(turn, "gpus", "/v1/gpus")
        submit = call(turn, "submit", "/v1/jobs", method="POST")
        await settle()
        assert app.started == ["show", "gpus", "submit"]  # the listing waits, no one else
        go(app, "show")
        await show
        await settle()
        assert app.started[-1] == "list"
        for name in ("list", "gpus", "submit"):
            go(app, name)
        await asyncio.gather(listing, other, submit)
        assert turn.points == 0

    asyncio.run(scenario())


def test_listings_are_made_one_at_a_time_and_sending_is_not_part_of_the_turn() -> None:
    async def scenario() -> None:
        app = App()
        turn = Turns(app)
        reading = asyncio.Event()

        async def slow_reader(message: Any) -> None:
            if message["type"] == "http.response.body":
                await reading.wait()  # a client that does not read its answer

        first = call(turn, "first", "/v1/jobs", send=slow_reader)
        second = call(turn, "second", "/v1/jobs")
        await settle()
        assert app.started == ["first"]
        go(app, "first")
        await settle()
        assert app.started == ["first", "second"] and not first.done()
        go(app, "second")
        await second
        reading.set()
        await first

    asyncio.run(scenario())


def test_a_stream_of_job_pages_does_not_starve_the_listings(monkeypatch: Any) -> None:
    monkeypatch.setattr(turns, "MAX_YIELD", 0.01)

    async def scenario() -> None:
        app = App()
        turn = Turns(app)
        show = call(turn, "show", "/v1/jobs/3")
        listing = call(turn, "list", "/v1/jobs")
        go(app, "list")
        await listing  # while the show is still unanswered
        assert not show.done()
        go(app, "show")
        await show

    asyncio.run(scenario())
