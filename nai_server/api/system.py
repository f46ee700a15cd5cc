"""`/v1/version`, `/v1/me` and `/v1/plugins`."""

from __future__ import annotations

from fastapi import APIRouter

from nai_server.api.deps import AdminDep, CallerDep, ServiceDep
from nai_server.plugins import PluginStatus
from nai_server.protocol import Me, PluginChoice, PluginInfo, VersionInfo

router = APIRouter(tags=["system"])


@router.get("/version")
def version(service: ServiceDep) -> VersionInfo:
    """API and server versions; needs no registration, so clients can check first."""
    return service.version()


@router.get("/me")
def me(service: ServiceDep, caller: CallerDep) -> Me:
    """Who the daemon thinks the caller is."""
    return service.me(caller)


@router.get("/plugins")
def plugins(service: ServiceDep, caller: CallerDep) -> list[PluginInfo]:
    """The plugins installed in the server's environment and whether they run; why a
    broken one failed is for admins (an import error may quote the server's files)."""
    return [_info(p, caller.admin) for p in service.plugin_list()]


@router.put("/plugins/{name}")
def choose_plugin(name: str, body: PluginChoice, service: ServiceDep,
                  _: AdminDep) -> list[PluginInfo]:
    """Enable or disable an installed plugin now and after restarts (over the config)."""
    return [_info(p, True) for p in service.plugins.set_enabled(name, body.enabled)]


def _info(p: PluginStatus, admin: bool) -> PluginInfo:
    return PluginInfo(name=p.name, kind=p.kind, version=p.version,
                      state=p.state, required=p.required, stuck=p.stuck,  # type: ignore[arg-type]
                      error=p.error if admin or p.state != "broken" else
                      "(an admin sees why: nai-admin plugins)")
