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
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from nai_server.protocol import API_VERSION, ConnectionFailed
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


class StandIn:
    """The stand-in daemon on a unix socket, which a test may stop and start again."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.start()

    def start(self) -> None:
        self.server = uvicorn.Server(uvicorn.Config(
            _stand_in(), uds=str(self.sock), log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=asyncio.run, args=(self.server.serve(),),
                                       daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, what="the stand-in daemon")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    short = Path(tempfile.mkdtemp(prefix="nai-fwd-", dir="/tmp"))
    daemon = StandIn(short / "d.sock")
    yield daemon
    daemon.stop()
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def forward(stand_in: StandIn) -> Iterator[tuple[httpx.Client, ServiceForwarder]]:
    client = ServerClient(local_http_client(stand_in.sock), name="test")
    errors: list[str] = []
    forwarder = ServiceForwarder(client, "echo", 0, on_error=errors.append)
    threading.Thread(target=forwarder.serve_forever, args=(0.05,), daemon=True).start()
    local = httpx.Client(base_url=f"http://127.0.0.1:{forwarder.port}", timeout=30)
    yield local, forwarder
    local.close()
    forwarder.shutdown()
    forwarder.server_close()
    client.close()


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
    waits: list[float] = []
    forwarder.policy = forwarder.policy.replace(retries=2)  # a daemon that stays away
    forwarder.sleep = waits.append
    answer = local.post("/predict", content=b"{}")
    assert len(waits) == 2  # tried again, on the backoff, before giving up
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


def test_a_forward_outlives_a_daemon_restart(
        forward: tuple[httpx.Client, ServiceForwarder], stand_in: StandIn) -> None:
    """The daemon restarts under a running forward: a request that finds it gone waits
    on the client's backoff and goes through once it is back, instead of a 502."""
    local, forwarder = forward
    assert local.post("/before", content=b"1").status_code == 200
    stand_in.stop()
    waits: list[float] = []

    def daemon_back_meanwhile(delay: float) -> None:
        waits.append(delay)
        if len(waits) == 2:  # the restart takes a while
            stand_in.start()

    forwarder.sleep = daemon_back_meanwhile
    answer = local.post("/after", content=b"2")
    assert answer.status_code == 200 and answer.json()["body"] == "2"
    assert len(waits) == 2 and 0 < waits[0] <= waits[1]


class _Dropping:
    """A client whose first try fails with `cause` (by default: the link to the daemon
    dropped after the request went out, so the daemon may have got it), then works."""

    def __init__(self, client: ServerClient, cause: Exception | None = None) -> None:
        self.client, self.tries = client, 0
        self.cause = cause or httpx.RemoteProtocolError("Server disconnected")

    def invoke_stream(self, *args: Any, **kwargs: Any) -> Any:
        self.tries += 1
        if self.tries == 1:
            raise ConnectionFailed(f"test: {self.cause}") from self.cause
        return self.client.invoke_stream(*args, **kwargs)


def test_a_request_that_may_have_arrived_is_resent_only_if_it_changes_nothing(
        forward: tuple[httpx.Client, ServiceForwarder]) -> None:
    local, forwarder = forward
    forwarder.sleep = lambda _: None
    forwarder.client = dropping = _Dropping(forwarder.client)  # type: ignore[assignment]
    assert local.get("/read").json()["method"] == "GET"  # sent again on a new link
    assert dropping.tries == 2
    dropping.tries = 0
    assert local.post("/write", content=b"x").status_code == 502  # never twice
    assert dropping.tries == 1


@pytest.mark.parametrize(("cause", "method", "resent"), [
    # Over SSH, the relay on the server could not reach the daemon: nothing went further.
    (ConnectionFailed("test: `nai-server dial-stdio` on h ended with exit status 1: "
                      "nai-server dial-stdio: no daemon socket at /run/nai/nai.sock"),
     "POST", True),
    (httpx.ConnectError("[Errno 111] Connection refused"), "POST", True),
    (httpx.ReadTimeout("timed out"), "GET", False),  # a slow service, not a lost link
])
def test_what_a_forward_sends_again(forward: tuple[httpx.Client, ServiceForwarder],
                                    cause: Exception, method: str, resent: bool) -> None:
    local, forwarder = forward
    forwarder.sleep = lambda _: None
    forwarder.client = dropping = _Dropping(forwarder.client, cause)  # type: ignore[assignment]
    answer = local.request(method, "/x", content=b"x" if method == "POST" else None)
    assert (answer.status_code, dropping.tries) == ((200, 2) if resent else (502, 1))
