"""`python -m nai_server.serving.replica`: serve `$NAI_MODEL_DIR/predict.py` over HTTP.

See the package docstring for the environment it reads and the routes it answers. The
model loads in the worker thread that will run predict (some libraries bind state to
the thread that made it) while /health already answers 503; a model that fails to load
ends the process with status 1 and the traceback on stderr, which the daemon keeps in
the replica's log and shows in the service's message."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from nai_server.serving import link
from nai_server.serving.batching import Batcher, Failed
from nai_server.serving.model import LoadedModel, files_metadata, load_model

DEFAULT_MAX_WAIT_MS = 5.0


@dataclass
class Settings:
    """What the replica serves and how, from the environment (package docstring)."""

    model_dir: Path
    socket_path: str | None = None
    port: int | None = None
    name: str = ""
    version: str = ""
    lineage: dict[str, Any] = field(default_factory=dict)
    max_batch: int = 1
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    service: str = ""
    replica: str = ""
    token_file: str | None = None  # the TCP link's secret (serving/link.py)
    address_file: str | None = None  # where "IP:PORT" is written for the daemon

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        if not env.get("NAI_MODEL_DIR"):
            raise SystemExit("nai replica: NAI_MODEL_DIR is not set: it names the model's "
                             "folder (the daemon sets it when it starts a replica)")
        if not (env.get("NAI_SERVE_SOCKET") or env.get("NAI_SERVE_PORT")
                or env.get("NAI_SERVE_TOKEN_FILE")):
            raise SystemExit("nai replica: set NAI_SERVE_SOCKET (a unix socket path) or "
                             "NAI_SERVE_PORT (a TCP port on 127.0.0.1)")
        try:
            lineage = orjson.loads(env.get("NAI_MODEL_METADATA") or "{}")
        except orjson.JSONDecodeError:
            lineage = {}
        # NAI_MODEL ("name@version", as the daemon sets it) when the parts are not given.
        name, _, version = env.get("NAI_MODEL", "").partition("@")
        return cls(model_dir=Path(env["NAI_MODEL_DIR"]),
                   socket_path=env.get("NAI_SERVE_SOCKET") or None,
                   port=int(env["NAI_SERVE_PORT"]) if env.get("NAI_SERVE_PORT") else None,
                   name=env.get("NAI_MODEL_NAME") or name,
                   version=env.get("NAI_MODEL_VERSION") or version,
                   lineage=lineage if isinstance(lineage, dict) else {},
                   max_batch=max(1, int(env.get("NAI_MAX_BATCH") or 1)),
                   max_wait_ms=float(env.get("NAI_MAX_WAIT_MS") or DEFAULT_MAX_WAIT_MS),
                   service=env.get("NAI_SERVICE", ""), replica=env.get("NAI_REPLICA", ""),
                   token_file=env.get("NAI_SERVE_TOKEN_FILE") or None,
                   address_file=env.get("NAI_SERVE_ADDRESS_FILE") or None)


def _default(value: Any) -> Any:
    """JSON for what predict returns beyond JSON's types (numpy and torch values)."""
    for method in ("tolist", "item"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"predict returned a {type(value).__name__}, which is not JSON")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)


def _error(status: int, code: str, message: str) -> Response:
    return Response(dumps({"error": {"code": code, "message": message}}), status,
                    media_type="application/json")


class Replica:
    """One replica's state: the model once loaded, and the batcher in front of it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model: LoadedModel | None = None
        self.load_seconds: float | None = None
        self.calls = self.inputs = 0  # predict(_batch) calls, and the inputs they took
        self.batcher = Batcher(self._run, max_batch=settings.max_batch,
                               max_wait=settings.max_wait_ms / 1000)

    def _run(self, inputs: list[Any]) -> list[Any]:
        assert self.model is not None
        self.calls += 1
        self.inputs += len(inputs)
        if self.settings.max_batch == 1 or len(inputs) == 1:
            return [self.model.predict(inputs[0])]
        try:
            return self.model.predict_batch(inputs)
        except Exception:
            # One caller's bad input must not fail the others batched with it: each
            # input again on its own, and only those that fail alone get the error.
            return [self._alone(x) for x in inputs]

    def _alone(self, inputs: Any) -> Any:
        assert self.model is not None
        try:
            return self.model.predict(inputs)
        except Exception as exc:
            return Failed(exc)

    def _load(self) -> None:
        started = time.monotonic()
        self.model = load_model(self.settings.model_dir)
        self.load_seconds = time.monotonic() - started

    async def load(self) -> None:
        """Load in the predict thread, so the model lives where predict runs."""
        await asyncio.get_running_loop().run_in_executor(self.batcher.executor, self._load)

    def metadata(self) -> dict[str, Any]:
        s = self.settings
        return {"name": s.name, "version": s.version, "lineage": s.lineage,
                "service": s.service, "replica": s.replica,
                "files_metadata": files_metadata(s.model_dir),
                "loaded": self.model is not None, "load_seconds": self.load_seconds,
                "batching": {"max_batch": s.max_batch, "max_wait_ms": s.max_wait_ms,
                             "predict_batch": bool(self.model and self.model.batches),
                             "calls": self.calls, "inputs": self.inputs}}


def create_app(replica: Replica) -> FastAPI:
    app = FastAPI(title="nai replica", docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> Response:
        if replica.model is None:
            return _error(503, "loading", "the model is still loading")
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/metadata")
    async def metadata() -> Response:
        return Response(dumps(replica.metadata()), media_type="application/json")

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        if replica.model is None:
            return _error(503, "loading", "the model is still loading: try again shortly")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return _error(400, "invalid", f"the body is not JSON ({exc}): send "
                          '{"inputs": ...}')
        if not isinstance(body, dict) or "inputs" not in body:
            return _error(400, "invalid", 'the body must be a JSON object {"inputs": ...}')
        try:
            outputs = await replica.batcher.submit(body["inputs"])
            return Response(dumps({"outputs": outputs}), media_type="application/json")
        except Exception as exc:
            traceback.print_exception(exc, file=sys.stderr)
            return _error(500, "predict_failed", f"{type(exc).__name__}: {exc}")

    return app


def bind(settings: Settings) -> socket.socket:
    """The listening socket: a unix socket only its user (and root) may connect to, a
    TCP port on 127.0.0.1, or, with a link token, a port on every address of this node
    (only a peer that proves the token is served: serving/link.py), its address
    written for the daemon."""
    if settings.token_file:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("0.0.0.0", settings.port or 0))
        sock.listen(256)
        if settings.address_file:
            write_address(settings.address_file, own_address(), sock.getsockname()[1])
        return sock
    if settings.socket_path:
        path = settings.socket_path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # made 0600 from the start: no moment where others connect
        try:
            sock.bind(path)
        finally:
            os.umask(old)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", settings.port or 0))
    sock.listen(256)
    return sock


def own_address() -> str:
    """This node's address as the daemon's host reaches it: the source address of a
    route towards the host sbatch ran on (no packet is sent), else this host's name's."""
    towards = os.environ.get("SLURM_SUBMIT_HOST") or os.environ.get("NAI_DAEMON_HOST")
    if towards:
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET,
                                                          socket.SOCK_DGRAM) as probe:
            probe.connect((towards, 9))
            return str(probe.getsockname()[0])
    return socket.gethostbyname(socket.gethostname())


def write_address(path: str, host: str, port: int) -> None:
    """`IP:PORT`, whole or not at all (a reader never sees half of it)."""
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as out:
        out.write(f"{host}:{port}\n")
    os.replace(tmp, path)


async def serve(settings: Settings, sock: socket.socket) -> int:
    """Serve until SIGTERM/SIGINT (requests in flight finish first); 1 if loading failed."""
    replica = Replica(settings)
    extra: dict[str, Any] = {}
    if settings.token_file:  # HTTP only after the peer proves the token (link.py)
        with open(settings.token_file, "rb") as f:
            extra["http"] = link.guarded_protocol(f.read().strip())
    config = uvicorn.Config(create_app(replica), lifespan="off", log_level="warning",
                            access_log=False, timeout_graceful_shutdown=30, **extra)
    server = uvicorn.Server(config)
    status = 0
    where = settings.socket_path or f"{sock.getsockname()[0]}:{sock.getsockname()[1]}"
    label = f"{settings.name}@{settings.version}" if settings.name else str(settings.model_dir)

    async def load() -> None:
        nonlocal status
        print(f"nai replica: loading {label} from {settings.model_dir}", file=sys.stderr,
              flush=True)
        try:
            await replica.load()
        except BaseException:
            traceback.print_exc()
            print(f"nai replica: {label} failed to load (above): fix predict.py's load() "
                  f"and serve a new version", file=sys.stderr, flush=True)
            status = 1
            server.should_exit = True
            return
        print(f"nai replica: {label} loaded in {replica.load_seconds:.2f}s, serving on "
              f"{where} (max_batch {settings.max_batch})", file=sys.stderr, flush=True)

    loader = asyncio.create_task(load())
    try:
        await server.serve(sockets=[sock])
    finally:
        loader.cancel()
        await replica.batcher.close()
    return status


def main() -> int:
    settings = Settings.from_env()
    sock = bind(settings)
    return asyncio.run(serve(settings, sock))


if __name__ == "__main__":
    sys.exit(main())
