"""`/v1/store/verify`: admins check the blob store (`nai-admin store verify`)."""

from __future__ import annotations

from fastapi import APIRouter, status

from nai_server.api.deps import AdminDep, ServiceDep
from nai_server.protocol import StoreReport, StoreVerifyStart

router = APIRouter(tags=["store"])


@router.post("/store/verify", status_code=status.HTTP_202_ACCEPTED)
def start_verify(body: StoreVerifyStart, service: ServiceDep, _: AdminDep) -> StoreReport:
    """Admins: start re-hashing every blob and checking every tree, in the background
    at `limits.verify_mib_per_s`; `repair` moves what is corrupt aside (never deletes),
    so that the next upload of those bytes restores it. 409 while one is running."""
    return StoreReport(**service.verifier.start(body.repair))


@router.get("/store/verify")
def verify_report(service: ServiceDep, _: AdminDep) -> StoreReport:
    """Admins: the running or last verification's report: progress, what is missing or
    corrupt, and the trees, jobs and registry versions it breaks."""
    return StoreReport(**service.verifier.report())
