"""`nai service forward`'s relay, against a stand-in for the daemon's invoke route served
by real uvicorn on a real unix socket: what a local HTTP client sends to the forwarded
port reaches `/v1/services/NAME/invoke/PATH` as it was sent, and the answer comes back
as the service gave it (status, headers, streamed body)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from nai_server.protocol import API_VERSION
from nai_server.testing import wait_for
from nai_tui.remote.client import ServerClient, local_http_client
from nai_tui.remote.forward import ServiceForwarder


def _stand_in() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/version")
    async def version() -> dict[str, str]:
        return {"api_version": API_VERSION, "server_version": "test", "mode": "personal"}

    @app.api_route("/v1/services/{name}/invoke/{path:path}",
                   methods=["GET", "POST", "PUT", "DELETE"])
    async def invoke(name: str, path: str, request: Request) -> Response:
        if name != "echo":
            return JSONResponse({"error": {"code": "not_found", "message": "no service"}}, 404)
        if path == "stream":
            async def pieces() -> Iterator[bytes]:  # type: ignore[misc]
                for i in range(3):
                    yield f"piece {i}\n".encode()
            return StreamingResponse(pieces(), media_type="text/plain")
        body = await request.body()
        return JSONResponse({"method": request.method, "path": path,
                             "query": request.url.query, "body": body.decode(),
                             "type": request.headers.get("content-type")},
                            status_code=418 if path == "teapot" else 200,
                            headers={"X-Replica": "0"})

    return app


@pytest.fixture
def forward() -> Iterator[tuple[httpx.Client, ServiceForwarder]]:
    short = Path(tempfile.mkdtemp(prefix="nai-fwd-", dir="/tmp"))
    sock = short / "d.sock"
    server = uvicorn.Server(uvicorn.Config(_stand_in(), uds=str(sock), log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the stand-in daemon")
    client = ServerClient(local_http_client(sock), name="test")
    errors: list[str] = []
    forwarder = ServiceForwarder(client, "echo", 0, on_error=errors.append)
    threading.Thread(target=forwarder.serve_forever, args=(0.05,), daemon=True).start()
    local = httpx.Client(base_url=f"http://127.0.0.1:{forwarder.port}", timeout=30)
    yield local, forwarder
    local.close()
    forwarder.shutdown()
    forwarder.server_close()
    client.close()
    server.should_exit = True
    thread.join(10)
    shutil.rmtree(short, ignore_errors=True)


def test_a_request_reaches_the_invoke_route_as_sent(
        forward: tuple[httpx.Client, ServiceForwarder]) -> None:
    local, forwarder = forward
    answer = local.post("/predict?x=1&y=%20z", content=b'{"inputs": [1, 2]}',
                        headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.headers["x-replica"] == "0"
    assert answer.json() == {"method": "POST", "path": "predict", "query": "x=1&y=%20z",
                             "body": '{"inputs": [1, 2]}', "type": "application/json"}
    assert local.get("/teapot").status_code == 418  # the service's status, not the relay's
    # Counted once the answer is out: the caller may read it a moment before.
    wait_for(lambda: forwarder.requests == 2, what="both requests counted")
    forwarder.service = "other"  # the daemon's own refusals come back as they are
    refused = local.get("/predict")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"


def test_a_streamed_answer_and_a_chunked_request_pass_through(
        forward: tuple[httpx.Client, ServiceForwarder]) -> None:
    local, _ = forward
    assert local.get("/stream").text == "piece 0\npiece 1\npiece 2\n"
    chunked = local.put("/upload", content=iter([b"ab", b"cd"]))  # no length: chunked
    assert chunked.json()["body"] == "abcd" and chunked.json()["method"] == "PUT"


def test_many_clients_at_once_each_get_their_own_answer(
        forward: tuple[httpx.Client, ServiceForwarder]) -> None:
    local, _ = forward
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda i: local.post(f"/p{i}", content=str(i).encode()).json(),
                               range(32)))
    assert [(b["path"], b["body"]) for b in bodies] == [(f"p{i}", str(i)) for i in range(32)]


def test_an_unreachable_daemon_is_a_502_that_says_why(
        forward: tuple[httpx.Client, ServiceForwarder]) -> None:
    local, forwarder = forward
    forwarder.client.http.close()
    forwarder.client.http = local_http_client(Path("/nonexistent/nai.sock"))
    answer = local.post("/predict", content=b"{}")
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "bad_gateway"
    assert answer.json()["error"]["message"].startswith("test: ")  # the server's name, why


def test_a_path_that_climbs_out_of_the_service_is_refused(
        forward: tuple[httpx.Client, ServiceForwarder]) -> None:
    """Whoever reaches the forwarded port must not reach the rest of the API as the
    user: `..` segments are refused before anything is sent to the daemon."""
    import http.client

    _, forwarder = forward
    conn = http.client.HTTPConnection("127.0.0.1", forwarder.port, timeout=30)
    conn.request("GET", "/../../../v1/me")  # sent as written: http.client keeps dots
    answer = conn.getresponse()
    assert answer.status == 400
    assert b"not passed on" in answer.read()
    conn.close()
