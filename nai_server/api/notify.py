"""A user's own notifications (`nai notify`): each caller sees and changes only theirs.

    GET    /v1/notify          your subscriptions
    POST   /v1/notify          subscribe (201)
    DELETE /v1/notify/{id}     unsubscribe
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, status

from nai_server.api.deps import CallerDep, ServiceDep
from nai_server.protocol import MAX_ID, NotifyCreate, NotifyInfo

router = APIRouter(prefix="/notify", tags=["notify"])
SubId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _info(sub: Any) -> NotifyInfo:
    return NotifyInfo(id=sub.id, via=sub.via, target=sub.target, events=list(sub.events))


@router.get("")
def mine(service: ServiceDep, caller: CallerDep) -> list[NotifyInfo]:
    return [_info(s) for s in service.plugins.subscriptions.of(caller.user)]


@router.post("", status_code=status.HTTP_201_CREATED)
def subscribe(body: NotifyCreate, service: ServiceDep, caller: CallerDep) -> NotifyInfo:
    return _info(service.plugins.subscriptions.add(caller.user, body.via, body.target,
                                                   body.events))


@router.delete("/{sub_id}")
def unsubscribe(sub_id: SubId, service: ServiceDep, caller: CallerDep) -> NotifyInfo:
    return _info(service.plugins.subscriptions.remove(caller.user, sub_id))
