"""`/v1/store/verify` and `/v1/store/gc`: admins check the blob store (`nai-admin store
verify`) and free what nothing refers to (`nai-admin store gc`)."""

from __future__ import annotations

from fastapi import APIRouter, status

from nai_server.api.deps import AdminDep, ServiceDep
from nai_server.protocol import GcReport, StoreGcStart, StoreReport, StoreVerifyStart

router = APIRouter(tags=["store"])


@router.post("/store/verify", status_code=status.HTTP_202_ACCEPTED)
def start_verify(body: StoreVerifyStart, service: ServiceDep, _: AdminDep) -> StoreReport:
    """Admins: start re-hashing every blob and checking every tree, in the background
    at `limits.verify_mib_per_s`; `repair` moves what is corrupt aside (never deletes),
    so that the next upload of those bytes restores it. 409 while one is running."""
    return StoreReport(**service.start_verify(body.repair))


@router.get("/store/verify")
def verify_report(service: ServiceDep, _: AdminDep) -> StoreReport:
    """Admins: the running or last verification's report: progress, what is missing or
    corrupt, and the trees, jobs and registry versions it breaks."""
    return StoreReport(**service.verifier.report())


@router.post("/store/gc", status_code=status.HTTP_202_ACCEPTED)
def start_gc(body: StoreGcStart, service: ServiceDep, _: AdminDep) -> GcReport:
    """Admins: start deleting, in the background, the trees and blobs that no job,
    registry version, service or session names and that nobody stored or was told of
    within `grace_seconds` (`dry_run`: count only). 409 while a gc or a verification
    runs."""
    return GcReport(**service.start_gc(body.grace_seconds, body.dry_run))


@router.get("/store/gc")
def gc_report(service: ServiceDep, _: AdminDep) -> GcReport:
    """Admins: the running or last gc's report: what it deleted, kept and freed."""
    return GcReport(**service.collector.report())
