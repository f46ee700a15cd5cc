"""Blobs and trees (DESIGN §6): which blobs are missing, packed upload, tree records
and streamed tree download. Every route answers as the caller may read (see
`nai_server.app.tree_access`): a tree they may not read is as unknown as one never sent."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Header, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from nai_server.api.deps import CallerDep, ServiceDep
from nai_server.protocol import (
    Invalid,
    MissingRequest,
    MissingResponse,
    PathsRequest,
    TreeCreate,
    TreeInfo,
    TreeRef,
    UploadResult,
)

router = APIRouter(tags=["blobs"])

# Hand the parser ~1 MiB at a time: hashing and disk writes run in a worker thread
# without a thread hop per network chunk. The pieces are fed as received: joining them
# into one buffer first (fresh pages for every MiB) made a 1 GiB upload 25 % slower.
FEED_BYTES = 1 << 20


@router.post("/blobs/missing")
def missing(body: MissingRequest, service: ServiceDep, caller: CallerDep) -> MissingResponse:
    """Of these digests, the ones the caller must send: those they have not uploaded
    themselves (what other users stored is not revealed)."""
    return MissingResponse(missing=service.missing_blobs(caller, body.digests))


@router.post("/blobs", status_code=status.HTTP_201_CREATED)
async def upload(request: Request, service: ServiceDep, caller: CallerDep) -> UploadResult:
    """Store many blobs sent as one tar stream whose members are named by digest.

    Every member is verified against its name before it is stored; a member named
    `unnamed` is stored under the digest its content hashes to (a client sends a large
    file that way while it is still hashing it). If the stream
    breaks, the blobs completed so far are kept (a retry skips them) and no partial
    blob is ever visible. The blobs are the caller's from then on (see `missing`).
    """
    receiver = service.blob_receiver(caller)
    buffered: list[bytes] = []
    size = total = 0
    # One batch is hashed and written in a worker thread while the next is received:
    # waiting for each batch before reading on would stall the sender.
    feeding: asyncio.Future[None] | None = None
    try:
        async for chunk in request.stream():
            buffered.append(chunk)
            size += len(chunk)
            total += len(chunk)
            if size >= FEED_BYTES:
                batch, buffered, size = buffered, [], 0
                if feeding is not None:
                    await feeding
                feeding = asyncio.ensure_future(run_in_threadpool(receiver.feed_many, batch))
        if feeding is not None:
            await feeding
            feeding = None
        if buffered:
            await run_in_threadpool(receiver.feed_many, buffered)
        stored = await run_in_threadpool(receiver.finish)
    except BaseException:
        if feeding is not None:  # let the thread finish before the receiver is dropped
            with contextlib.suppress(BaseException):
                await asyncio.shield(feeding)
        await run_in_threadpool(receiver.abort)
        raise
    return UploadResult(stored=len(stored), bytes=total)


@router.post("/trees", status_code=status.HTTP_201_CREATED)
def create_tree(body: TreeCreate, service: ServiceDep, caller: CallerDep,
                response: Response) -> TreeRef:
    """Record a tree; refused with the missing digests if any blob is absent or not the
    caller's (neither uploaded by them nor in a tree they may read)."""
    info = service.create_tree(caller, body.entries)
    response.headers["Location"] = f"/v1/trees/{info.id}"
    return info


@router.head("/trees/{tree_id}")
def tree_exists(tree_id: str, service: ServiceDep, caller: CallerDep) -> Response:
    """200 if the tree is recorded, with every blob, and the caller may read it, 404 if
    not: a client that computed a tree's id asks this before anything else, so
    re-syncing an unchanged folder costs one call (and one that lost a blob is sent
    again, which restores it)."""
    return Response(status_code=200 if service.has_tree(tree_id, caller) else 404)


@router.get("/trees/{tree_id}")
def get_tree(tree_id: str, service: ServiceDep, caller: CallerDep) -> TreeInfo:
    return service.tree_info(tree_id, caller)


@router.get("/trees/{tree_id}/archive")
def download_tree(tree_id: str, service: ServiceDep, caller: CallerDep,
                  path: str = "") -> StreamingResponse:
    """The tree, or the part of it at `path`, as a streamed tar."""
    chunks = service.tree_tar(tree_id, path, caller=caller)
    return StreamingResponse(iterate_in_threadpool(chunks), media_type="application/x-tar")


@router.get("/trees/{tree_id}/file", response_class=StreamingResponse)
def tree_file(tree_id: str, path: str, service: ServiceDep, caller: CallerDep,
              range_: str | None = Header(default=None, alias="Range")) -> StreamingResponse:
    """One file of the tree. With `Range: bytes=N-` it is sent from byte N on (206 and
    `Content-Range`), so a client resumes a download that broke off; other range forms
    are ignored (200, the whole file), as HTTP allows."""
    entry = service.tree_file(tree_id, path, caller)
    start = range_start(range_)
    if start and start >= entry.size:
        raise Invalid(f"{path!r} has {entry.size} bytes: a range from byte {start} is past "
                      "its end")
    headers = {"Content-Length": str(entry.size - start), "Accept-Ranges": "bytes"}
    if start:
        headers["Content-Range"] = f"bytes {start}-{entry.size - 1}/{entry.size}"
    return StreamingResponse(
        iterate_in_threadpool(service.blob_chunks(entry.sha256, offset=start)),
        status_code=206 if start else 200, media_type="application/octet-stream",
        headers=headers)


def range_start(header: str | None) -> int:
    """N of a `bytes=N-` range header; 0 (the whole file) for none or any other form."""
    unit, _, spec = (header or "").strip().partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip() != "bytes" or not dash or last or not first.isascii() \
            or not first.isdigit() or len(first) > 18:
        return 0
    return int(first)


@router.post("/trees/{tree_id}/archive", response_class=StreamingResponse)
def download_tree_paths(tree_id: str, body: PathsRequest, service: ServiceDep,
                        caller: CallerDep) -> StreamingResponse:
    """Exactly the entries at `paths`, as a streamed tar: what a client is missing."""
    chunks = service.tree_tar(tree_id, paths=body.paths, caller=caller)
    return StreamingResponse(iterate_in_threadpool(chunks), media_type="application/x-tar")
