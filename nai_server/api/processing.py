"""`POST /v1/datasets/{name}/process`: run an installed dataset processor over a version
of a dataset, as the caller's job (201, the job); `nai dataset process`.
`POST /v1/datasets/{name}/annotate`: serve an installed annotator's web app over a
version, as the caller's service (201, the service, reached at
`/v1/services/{service}/invoke/`); `nai dataset annotate`."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from nai_server.api.deps import CallerDep, ServiceDep
from nai_server.protocol import DatasetAnnotate, DatasetProcess, JobInfo
from nai_server.protocol.services import ServiceInfo

router = APIRouter(tags=["datasets"])


@router.post("/datasets/{name}/process", status_code=status.HTTP_201_CREATED)
def process(name: str, body: DatasetProcess, service: ServiceDep, caller: CallerDep,
            response: Response) -> JobInfo:
    info = service.processing.process(caller, name, body)
    response.headers["Location"] = f"/v1/jobs/{info.id}"
    return info


@router.post("/datasets/{name}/annotate", status_code=status.HTTP_201_CREATED)
def annotate(name: str, body: DatasetAnnotate, service: ServiceDep, caller: CallerDep,
             response: Response) -> ServiceInfo:
    """Start an annotate session: a service of kind "annotator" (see `nai services`);
    stopping it saves its labels as the dataset's next version."""
    info = service.annotating.start(caller, name, body)
    response.headers["Location"] = f"/v1/services/{info.name}"
    return info
