"""Reading a server's answers across versions: fields this client does not know are
ignored (a newer server may add some, within its major API version), and an answer it
cannot read becomes a message that says which side to upgrade."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from nai_server.protocol import API_VERSION

M = TypeVar("M", bound=BaseModel)


def read_reply(model: type[M], body: Any) -> M:
    """`model` read from a server's answer, ignoring fields it does not know. Reply
    models ignore them by their config; the models that also travel as requests
    (`Quota`, `DrainState`) stay strict for the server's sake, so what they refuse as
    unknown is dropped here and the answer read again."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        unknown = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
        if not unknown:
            raise
        for loc in unknown:
            body = _without(body, loc)
        return model.model_validate(body)


def _without(body: Any, loc: tuple[int | str, ...]) -> Any:
    """A copy of `body` without the item at `loc` (copied along that path only)."""
    head, *rest = loc
    if isinstance(body, dict) and head in body:
        copy = dict(body)
        if rest:
            copy[head] = _without(body[head], tuple(rest))
        else:
            del copy[head]
        return copy
    if isinstance(body, list) and isinstance(head, int) and rest and 0 <= head < len(body):
        items = list(body)
        items[head] = _without(body[head], tuple(rest))
        return items
    return body


def _version_parts(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return ()


def unreadable(server: str, server_api: str | None, model: type[BaseModel],
               exc: ValidationError) -> str:
    """What to tell the user when `server`'s answer does not read as `model`: what is
    wrong with it, and whom to upgrade (the side with the older API minor version)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the body"
    if server_api is None or _version_parts(server_api) == _version_parts(API_VERSION):
        side = "whichever of the two is older"
    elif _version_parts(server_api) < _version_parts(API_VERSION):
        side = "the server"
    else:
        side = "this client (pip install -U nothingai)"
    return (f"{server} sent an answer this client cannot read ({model.__name__}, "
            f"{where}: {first['msg']}); server API {server_api or 'unknown'}, client API "
            f"{API_VERSION}: upgrade {side}")
