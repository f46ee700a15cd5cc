"""Dependencies shared by the routes: the service and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from nai_server.accounts import Accounts, Caller
from nai_server.identity import PEER_KEY
from nai_server.service import Service


def get_service(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


def get_caller(request: Request) -> Caller:
    peer = getattr(request.state, PEER_KEY, None)
    return get_service(request).accounts.resolve(peer)


def get_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    Accounts.require_admin(caller)
    return caller


ServiceDep = Annotated[Service, Depends(get_service)]
CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(get_admin)]
