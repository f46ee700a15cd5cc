"""`POST /v1/datasets/{name}/process`: run an installed dataset processor over a version
of a dataset, as the caller's job (201, the job); `nai dataset process`.
`POST /v1/datasets/{name}/annotate`: serve an installed annotator's web app over a
version, as the caller's job (201, the job); `nai dataset annotate`.
`/v1/jobs/{id}/app/{path}`: that app, relayed to the job's socket, for those who may
read the job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from fastapi.responses import StreamingResponse

from nai_server.api.deps import CallerDep, ServiceDep
from nai_server.api.relay import APP_BODY, APP_METHODS, Relayed, app_admit, route_rest
from nai_server.protocol import MAX_ID, DatasetAnnotate, DatasetProcess, JobInfo

router = APIRouter(tags=["datasets"])



@router.post("/datasets/{name}/process", status_code=status.HTTP_201_CREATED)
def process(name: str, body: DatasetProcess, service: ServiceDep, caller: CallerDep,
            response: Response) -> JobInfo:
    info = service.processing.process(caller, name, body)
    response.headers["Location"] = f"/v1/jobs/{info.id}"
    return info


@router.post("/datasets/{name}/annotate", status_code=status.HTTP_201_CREATED)
def annotate(name: str, body: DatasetAnnotate, service: ServiceDep, caller: CallerDep,
             response: Response) -> JobInfo:
    info = service.processing.annotate(caller, name, body)
    response.headers["Location"] = f"/v1/jobs/{info.id}/app/"
    return info


async def job_app(job_id: Annotated[int, Path(ge=1, le=MAX_ID)], path: str,
                  service: ServiceDep, caller: CallerDep) -> Response:
    """The request, sent to the annotate job's app as `/{path}?{query}`, and its answer
    streamed back (503 while the app is not up, 502 if it does not answer in time).
    (Served by `api.relay.Relays` before the router; this route is its description.)"""
    return Relayed(app_admit(service, caller, job_id), APP_BODY, route_rest(path))


for _method in APP_METHODS:  # one route per method: each its own operation id
    router.add_api_route("/jobs/{job_id}/app/{path:path}", job_app, methods=[_method],
                         response_class=StreamingResponse,
                         operation_id=f"job_app_{_method.lower()}")
