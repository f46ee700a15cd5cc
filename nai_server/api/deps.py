"""Dependencies shared by the routes: the service and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from nai_server.api.identity import PEER_KEY
from nai_server.app.accounts import Accounts, Caller
from nai_server.app.use_cases import UseCases

# These are coroutines on purpose: FastAPI runs a plain `def` dependency in the
# thread pool, a hop per dependency per request. Identity is resolved from a cache
# (taking the lock only when users or groups changed), so nothing here blocks.


async def get_service(request: Request) -> UseCases:
    return request.app.state.service  # type: ignore[no-any-return]


async def get_caller(request: Request) -> Caller:
    peer = getattr(request.state, PEER_KEY, None)
    return (await get_service(request)).accounts.resolve(peer)


async def get_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    Accounts.require_admin(caller)
    return caller


ServiceDep = Annotated[UseCases, Depends(get_service)]
CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(get_admin)]
