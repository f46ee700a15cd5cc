"""`POST /v1/datasets/{name}/process`: run an installed dataset processor over a version
of a dataset, as the caller's job (201, the job); `nai dataset process`."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from nai_server.api.deps import CallerDep, ServiceDep
from nai_server.protocol import DatasetProcess, JobInfo

router = APIRouter(tags=["datasets"])


@router.post("/datasets/{name}/process", status_code=status.HTTP_201_CREATED)
def process(name: str, body: DatasetProcess, service: ServiceDep, caller: CallerDep,
            response: Response) -> JobInfo:
    info = service.processing.process(caller, name, body)
    response.headers["Location"] = f"/v1/jobs/{info.id}"
    return info
