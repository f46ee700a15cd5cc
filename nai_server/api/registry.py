"""Datasets and models (DESIGN §3, §4): one router per kind, identical in shape.

    GET    /v1/{kind}s                              what the caller may read
    POST   /v1/{kind}s                              create, with version 1 (201)
    GET    /v1/{kind}s/{name}                       the entry and its versions
    DELETE /v1/{kind}s/{name}                       remove every version
    POST   /v1/{kind}s/{name}/versions              push a new version (201), or 200 with
                                                    `unchanged` when the latest holds that tree
    GET    /v1/{kind}s/{name}/versions/{ref}        one version: number, tag or latest
    DELETE /v1/{kind}s/{name}/versions/{ref}        remove one version
    PUT    /v1/{kind}s/{name}/sharing               {"shared": bool, "groups": [...]}
    PUT    /v1/{kind}s/{name}/versions/{ref}/tag    {"tag": "T"} or {"tag": null}

and, for models only:

    POST   /v1/models/{name}/from-job               a finished job's outputs as the next
                                                    version (201), with lineage and metrics
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from nai_server.api.deps import CallerDep, ServiceDep
from nai_server.core.registry_rules import Kind
from nai_server.protocol import (
    ModelFromJob,
    PushedVersion,
    RegistryCreate,
    RegistryEntry,
    RegistrySummary,
    RegistryVersion,
    RemovalResult,
    SharingUpdate,
    TagUpdate,
    VersionCreate,
)


def registry_router(kind: Kind) -> APIRouter:
    """The routes of one registry, mounted at `/{kind}s`."""
    base = f"/{kind}s"
    router = APIRouter(prefix=base, tags=[f"{kind}s"])

    @router.get("")
    def list_entries(service: ServiceDep, caller: CallerDep) -> list[RegistrySummary]:
        return service.registry.list_entries(caller, kind)

    @router.post("", status_code=status.HTTP_201_CREATED)
    def create(body: RegistryCreate, service: ServiceDep, caller: CallerDep,
               response: Response) -> RegistryEntry:
        entry = service.registry.create(caller, kind, body)
        response.headers["Location"] = f"/v1{base}/{entry.name}"
        return entry

    @router.get("/{name}")
    def show(name: str, service: ServiceDep, caller: CallerDep) -> RegistryEntry:
        return service.registry.show(caller, kind, name)

    @router.delete("/{name}")
    def remove(name: str, service: ServiceDep, caller: CallerDep) -> RemovalResult:
        return service.registry.remove(caller, kind, name)

    @router.post("/{name}/versions", status_code=status.HTTP_201_CREATED)
    def push(name: str, body: VersionCreate, service: ServiceDep, caller: CallerDep,
             response: Response) -> PushedVersion:
        version = service.registry.push(caller, kind, name, body)
        if version.unchanged:  # nothing created: the latest version already holds it
            response.status_code = status.HTTP_200_OK
        response.headers["Location"] = f"/v1{base}/{name}/versions/{version.version}"
        return version

    @router.get("/{name}/versions/{ref}")
    def show_version(name: str, ref: str, service: ServiceDep,
                     caller: CallerDep) -> RegistryVersion:
        return service.registry.version(caller, kind, name, ref)

    @router.delete("/{name}/versions/{ref}")
    def remove_version(name: str, ref: str, service: ServiceDep,
                       caller: CallerDep) -> RemovalResult:
        return service.registry.remove(caller, kind, name, ref)

    @router.put("/{name}/sharing")
    def set_sharing(name: str, body: SharingUpdate, service: ServiceDep,
                    caller: CallerDep) -> RegistryEntry:
        return service.registry.set_sharing(caller, kind, name, shared=body.shared,
                                            groups=body.groups)

    @router.put("/{name}/versions/{ref}/tag")
    def set_tag(name: str, ref: str, body: TagUpdate, service: ServiceDep,
                caller: CallerDep) -> RegistryVersion:
        return service.registry.set_tag(caller, kind, name, ref, body.tag)

    return router


def _models_from_jobs() -> APIRouter:
    router = APIRouter(prefix="/models", tags=["models"])

    @router.post("/{name}/from-job", status_code=status.HTTP_201_CREATED)
    def from_job(name: str, body: ModelFromJob, service: ServiceDep, caller: CallerDep,
                 response: Response) -> RegistryVersion:
        version = service.job_models.register(caller, name, body)
        response.headers["Location"] = f"/v1/models/{name}/versions/{version.version}"
        return version

    return router


router = APIRouter()
router.include_router(registry_router("dataset"))
router.include_router(registry_router("model"))
router.include_router(_models_from_jobs())
