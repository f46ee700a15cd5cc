"""Who uses how much of the GPUs (`sshare`): read-only, for every caller."""

from __future__ import annotations

from fastapi import APIRouter

from nai_server.api.deps import CallerDep, ServiceDep
from nai_server.app.usage_report import usage_report
from nai_server.protocol.usage import UsageReport

router = APIRouter(tags=["jobs"])


@router.get("/usage")
def usage(service: ServiceDep, _: CallerDep) -> UsageReport:
    """Each user's and group's GPUs in use, decayed usage and fair-share standing, and
    use against quota."""
    return usage_report(service.jobs.runtime, service.clock())
