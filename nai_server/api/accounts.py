"""Users, groups, quotas and drain: admin routes (`nai-admin` is their client)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from nai_server.api.deps import AdminDep, CallerDep, ServiceDep
from nai_server.protocol import (
    DrainState,
    Forbidden,
    GroupCreate,
    GroupInfo,
    MemberAdd,
    Quota,
    UserCreate,
    UserInfo,
)

router = APIRouter(tags=["admin"])


@router.get("/users")
def list_users(service: ServiceDep, _: AdminDep) -> list[UserInfo]:
    return service.accounts.list_users()


@router.post("/users", status_code=status.HTTP_201_CREATED)
def add_user(body: UserCreate, service: ServiceDep, _: AdminDep, response: Response) -> UserInfo:
    info = service.accounts.add_user(body.name)
    response.headers["Location"] = f"/v1/users/{info.name}"
    return info


@router.get("/users/{name}")
def show_user(name: str, service: ServiceDep, caller: CallerDep) -> UserInfo:
    if name != caller.user and not caller.admin:
        raise Forbidden("only admins may look at other users")
    return service.accounts.show_user(name)


@router.delete("/users/{name}", status_code=status.HTTP_204_NO_CONTENT)
def remove_user(name: str, service: ServiceDep, _: AdminDep) -> None:
    service.accounts.remove_user(name)


@router.get("/users/{name}/quota")
def user_quota(name: str, service: ServiceDep, caller: CallerDep) -> Quota:
    return show_user(name, service, caller).quota


@router.put("/users/{name}/quota")
def set_user_quota(name: str, body: Quota, service: ServiceDep, _: AdminDep) -> Quota:
    return service.accounts.set_user_quota(name, body).quota


@router.get("/groups")
def list_groups(service: ServiceDep, _: CallerDep) -> list[GroupInfo]:
    return service.accounts.list_groups()


@router.post("/groups", status_code=status.HTTP_201_CREATED)
def add_group(body: GroupCreate, service: ServiceDep, _: AdminDep, response: Response) -> GroupInfo:
    info = service.accounts.add_group(body.name)
    response.headers["Location"] = f"/v1/groups/{info.name}"
    return info


@router.get("/groups/{name}")
def show_group(name: str, service: ServiceDep, _: CallerDep) -> GroupInfo:
    return service.accounts.show_group(name)


@router.delete("/groups/{name}", status_code=status.HTTP_204_NO_CONTENT)
def remove_group(name: str, service: ServiceDep, _: AdminDep) -> None:
    service.accounts.remove_group(name)


@router.post("/groups/{name}/members", status_code=status.HTTP_201_CREATED)
def add_member(name: str, body: MemberAdd, service: ServiceDep, _: AdminDep) -> GroupInfo:
    return service.accounts.add_member(name, body.user)


@router.delete("/groups/{name}/members/{user}")
def remove_member(name: str, user: str, service: ServiceDep, _: AdminDep) -> GroupInfo:
    return service.accounts.remove_member(name, user)


@router.get("/groups/{name}/quota")
def group_quota(name: str, service: ServiceDep, _: CallerDep) -> Quota:
    return service.accounts.show_group(name).quota


@router.put("/groups/{name}/quota")
def set_group_quota(name: str, body: Quota, service: ServiceDep, _: AdminDep) -> Quota:
    return service.accounts.set_group_quota(name, body).quota


@router.get("/drain")
def get_drain(service: ServiceDep, _: CallerDep) -> DrainState:
    return DrainState(drained=service.accounts.drained())


@router.put("/drain")
def set_drain(body: DrainState, service: ServiceDep, _: AdminDep) -> DrainState:
    return DrainState(drained=service.accounts.set_drained(body.drained))
