"""`/v1/version` and `/v1/me`."""

from __future__ import annotations

from fastapi import APIRouter

from nai_server.api.deps import CallerDep, ServiceDep
from nai_server.protocol import Me, VersionInfo

router = APIRouter(tags=["system"])


@router.get("/version")
def version(service: ServiceDep) -> VersionInfo:
    """API and server versions; needs no registration, so clients can check first."""
    return service.version()


@router.get("/me")
def me(service: ServiceDep, caller: CallerDep) -> Me:
    """Who the daemon thinks the caller is."""
    return service.me(caller)
