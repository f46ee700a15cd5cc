"""Jobs and GPUs: submit, list, show, cancel, logs (with follow), metrics, outputs."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from nai_server.api.deps import CallerDep, ServiceDep
from nai_server.api.log_follow import follow_log
from nai_server.app import logs as app_logs
from nai_server.core.bounds import shown
from nai_server.core.states import JobState
from nai_server.protocol import (
    MAX_ID,
    MAX_LOG_MATCHES,
    MAX_LOG_PATTERN,
    MAX_LOG_RANGE,
    Conflict,
    GpuList,
    JobInfo,
    JobList,
    JobSubmit,
    LogMatches,
    MetricsPage,
    NotFound,
    TreeInfo,
)
from nai_server.protocol.jobs import LOG_STDERR_HEADER, format_spans

router = APIRouter(tags=["jobs"])

FOLLOW_POLL_SECONDS = 0.02
# Ids, offsets and line numbers stay below 2**53: a larger one reached a file seek or
# the state file as an integer neither can take.
JobId = Annotated[int, Path(ge=0, le=MAX_ID)]


@router.get("/gpus")
def gpus(service: ServiceDep, _: CallerDep) -> GpuList:
    """Every GPU: memory, utilisation, the job holding it, and foreign processes."""
    return service.jobs.gpus()


@router.post("/jobs", status_code=status.HTTP_201_CREATED)
def submit(body: JobSubmit, service: ServiceDep, caller: CallerDep,
           response: Response, dry_run: bool = False) -> JobInfo:
    """Queue a job. `dry_run=1`: checked as a submit is (the same refusals), but
    nothing is created: 200 with the job as it would be queued, id 0, and `est_start`
    (when it would start, the server's clock; `submitted_at` means at once, null not
    known) and `reason` (why it would wait), planned from today's queue."""
    info = service.jobs.submit(caller, service.jobs.parse(body), body.code_tree,
                               code_from_model=body.code_from_model, dry_run=dry_run)
    if dry_run:
        response.status_code = status.HTTP_200_OK
    else:
        response.headers["Location"] = f"/v1/jobs/{info.id}"
    return info


@router.get("/jobs", response_model=JobList)
def list_jobs(
    service: ServiceDep, caller: CallerDep,
    scope: Literal["all", "mine"] = "all", state: JobState | None = None,
    user: str | None = None,
    limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=MAX_ID),
    before: int | None = Query(None, ge=1, le=MAX_ID),
    since: float | None = Query(None, ge=0, le=MAX_ID),
) -> Response:
    """Jobs, newest first. `scope=mine` for the caller's own. `before=<id>` lists only
    older ids: pass each page's `next_before` to walk the whole history. `since`
    (unix time) keeps jobs submitted from then on."""
    # Encoded in the worker thread: a page of hundreds of jobs encoded on the event
    # loop held up every other request (a `nai show`) behind it.
    body = service.jobs.list_json(caller, scope=scope, state=state, user=user, limit=limit,
                                  offset=offset, before=before, since=since)
    return Response(body, media_type="application/json")


@router.get("/jobs/{job_id}")
def show(job_id: JobId, service: ServiceDep, caller: CallerDep) -> JobInfo:
    return service.jobs.show(caller, job_id)


@router.delete("/jobs/{job_id}")
def cancel(job_id: JobId, service: ServiceDep, caller: CallerDep) -> JobInfo:
    """Cancel: a queued job at once; a running one gets SIGTERM, then SIGKILL after
    the grace period."""
    return service.jobs.cancel(caller, job_id)


LOG_CHUNK = 1 << 20


@router.get("/jobs/{job_id}/logs", response_class=StreamingResponse)
def logs(job_id: JobId, service: ServiceDep, caller: CallerDep,
         offset: int = Query(0, ge=0, le=MAX_ID), follow: bool = False) -> StreamingResponse:
    """The job's stdout+stderr from byte `offset`; `follow=true` streams until it ends."""
    job_dir = service.jobs.log_dir(caller, job_id)
    if follow:
        jobs = service.jobs
        body = follow_log(lambda: jobs.ended(job_id), job_dir, offset, chunk=LOG_CHUNK,
                      poll=FOLLOW_POLL_SECONDS)
        return StreamingResponse(body, media_type="text/plain; charset=utf-8")
    return StreamingResponse(iterate_in_threadpool(service.jobs.log_chunks(job_dir, offset)),
                             media_type="text/plain; charset=utf-8")


@router.get("/jobs/{job_id}/metrics")
def metrics(job_id: JobId, service: ServiceDep, caller: CallerDep,
            since: int = Query(0, ge=0, le=MAX_ID)) -> MetricsPage:
    """Lines of metrics.jsonl after line `since` (pass `next` back to continue)."""
    return service.jobs.metrics(caller, job_id, since)


@router.get("/jobs/{job_id}/outputs")
def outputs(job_id: JobId, service: ServiceDep, caller: CallerDep) -> TreeInfo:
    """The job's output tree (collected from output/ when it ended)."""
    return service.tree_info(service.jobs.output_tree(caller, job_id))


@router.get("/jobs/{job_id}/outputs/archive", response_class=StreamingResponse)
def outputs_archive(job_id: JobId, service: ServiceDep, caller: CallerDep,
                    path: str = "") -> StreamingResponse:
    """All outputs, or those at `path`, as a streamed tar."""
    chunks = service.tree_tar(service.jobs.output_tree(caller, job_id), path)
    return StreamingResponse(iterate_in_threadpool(chunks), media_type="application/x-tar")


@router.get("/jobs/{job_id}/outputs/file", response_class=StreamingResponse)
def output_file(job_id: JobId, service: ServiceDep, caller: CallerDep,
                path: str) -> StreamingResponse:
    """One output file's bytes."""
    tree_id = service.jobs.output_tree(caller, job_id)
    entry = next((e for e in service.tree_info(tree_id).entries
                  if e.path == path and e.kind == "file"), None)
    if entry is None:
        raise NotFound(f"job {job_id} has no output file {shown(path)}")
    if not service.blobs.has(entry.sha256):  # checked now: once streaming, no status
        raise Conflict(f"output file {shown(path)} of job {job_id} is missing from the "
                       "server's blob store; ask the server's admin (the store is damaged)")
    return StreamingResponse(iterate_in_threadpool(service.blob_chunks(entry.sha256)),
                             media_type="application/octet-stream",
                             headers={"Content-Length": str(entry.size)})


# --- log ranges and search: what a pager over a log of any length asks for ------------

LOG_SIZE_HEADER = "X-Log-Size"


@router.get("/jobs/{job_id}/logs/range")
def log_range(job_id: JobId, service: ServiceDep, caller: CallerDep,
              offset: int = Query(0, ge=0, le=MAX_ID),
              length: int = Query(MAX_LOG_RANGE, ge=0, le=MAX_LOG_RANGE)) -> Response:
    """Up to `length` bytes of the log from byte `offset` (at most MAX_LOG_RANGE), its
    size in the X-Log-Size header, and which of those bytes came from the job's stderr
    in X-Log-Stderr ("start-end,...", counted from `offset`; absent when none did)."""
    piece = app_logs.log_piece(service.jobs, caller, job_id, offset, length)
    headers = {LOG_SIZE_HEADER: str(piece.size)}
    if piece.stderr:
        headers[LOG_STDERR_HEADER] = format_spans(offset, list(piece.stderr))
    return Response(piece.data, media_type="application/octet-stream", headers=headers)


@router.get("/jobs/{job_id}/logs/search")
def log_search(job_id: JobId, service: ServiceDep, caller: CallerDep,
               q: str = Query(min_length=1, max_length=MAX_LOG_PATTERN),
               offset: int = Query(0, ge=0, le=MAX_ID), backward: bool = False,
               limit: int = Query(100, ge=1, le=MAX_LOG_MATCHES)) -> LogMatches:
    """Byte offsets where the text `q` occurs (ASCII case ignored) from `offset` on, or
    before it with `backward`, nearest first; `next` continues a scan cut short."""
    return app_logs.log_search(service.jobs, caller, job_id, q, offset,
                               backward=backward, limit=limit)
