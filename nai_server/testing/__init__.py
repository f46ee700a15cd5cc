"""Test helpers that ship with the code (like fabric.testing): build a service on
fake GPUs, and an ASGI wrapper that plays the socket peer."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from nai_server.api.identity import PEER_KEY
from nai_server.app.accounts import Caller, Peer
from nai_server.app.use_cases import UseCases
from nai_server.config import load_config
from nai_server.daemon import bootstrap
from nai_server.host.gpus import FakeGpuInventory


def make_service(state_dir: Path, *, mode: str = "personal", gpus: int = 2,
                 clock: Any = None, plugins: Any = None, **config: Any) -> UseCases:
    """A service over a temporary state dir with `gpus` fake GPUs (and `plugins`, a
    `PluginRegistry`, rather than the installed ones)."""
    cfg = load_config(None, mode=mode, state_dir=state_dir, socket=state_dir / "nai.sock",
                      fake_gpus=gpus, **config)
    extra = {"clock": clock} if clock is not None else {}
    return bootstrap(cfg, gpus=FakeGpuInventory.with_count(gpus), plugins=plugins, **extra)


class AsPeer:
    """ASGI middleware that sets `request.state.peer` as a unix socket would."""

    def __init__(self, app: ASGIApp, uid: int | None = None, gid: int | None = None) -> None:
        self.app = app
        self.peer = Peer(pid=os.getpid(), uid=os.getuid() if uid is None else uid,
                         gid=os.getgid() if gid is None else gid)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": {**scope.get("state", {}), PEER_KEY: self.peer}}
        await self.app(scope, receive, send)


@contextlib.contextmanager
def as_callers(service: UseCases) -> Iterator[Callable[[Caller], Any]]:
    """`client(caller)`: an in-process API client whose every request is `caller`'s (the
    API's identity dependency answers it), one per user; all closed on leaving."""
    from starlette.testclient import TestClient

    from nai_server.api import create_app
    from nai_server.api.deps import get_caller

    clients: dict[str, TestClient] = {}

    def client(caller: Caller) -> TestClient:
        if caller.user not in clients:
            app = create_app(service)

            async def fixed() -> Caller:
                return caller

            app.dependency_overrides[get_caller] = fixed
            clients[caller.user] = TestClient(app, base_url="http://nai").__enter__()
        return clients[caller.user]

    try:
        yield client
    finally:
        for made in clients.values():
            made.__exit__(None, None, None)


def end_jobs(runtime: Any) -> None:
    """Kill what a test's jobs still run (a job outlives its daemon, by design: not its
    test), their sessions and cgroups; for fixtures' teardown, before `close`."""
    import signal

    for job in runtime.jobs.hot():
        if job.active and job.pid:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if job.active:
            runtime.contain.kill(job.id)


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition",
             step: Callable[[], object] | None = None) -> Any:
    """Poll until `predicate()` is truthy (running `step` before each look); fail naming
    `what` after `timeout` seconds. Tests wait with this, never with a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        if step is not None:
            step()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def tick_until(service: UseCases, predicate: Callable[[], Any], timeout: float = 20.0,
               what: str = "condition") -> Any:
    """Step the service until `predicate()` holds (real job processes take real time)."""
    return wait_for(predicate, timeout, what, step=service.tick)


def upload_tree(api: Any, files: dict[str, bytes]) -> str:
    """Send the files' blobs through an API client and record their tree; its id."""
    blobs, manifest = tree_upload(files)
    sent = api.post("/v1/blobs", content=blobs)
    assert sent.status_code == 201, sent.text
    tree = api.post("/v1/trees", json=manifest)
    assert tree.status_code == 201, tree.text
    return str(tree.json()["id"])


def tree_upload(files: dict[str, bytes]) -> tuple[bytes, dict[str, Any]]:
    """What a client sends to upload `files` (path: content): the packed blobs, the
    body of POST /v1/blobs, and the tree's manifest, the body of POST /v1/trees. For
    helpers that carry the two requests their own way (as a unix user, say)."""
    blobs = pack({hashlib.sha256(d).hexdigest(): d for d in files.values()})
    entries = [{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
               for p, d in files.items()]
    return blobs, {"entries": entries}


def pack(blobs: dict[str, bytes]) -> bytes:
    """A packed upload: a ustar stream whose members are named by the digest they claim
    (a test may claim a wrong one)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in blobs.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def imports_of(code: str, watched: Iterable[str]) -> tuple[list[str], list[str], str]:
    """Run `code` in a fresh interpreter: (the lines it printed, which of the `watched`
    modules it had imported by the end, what it wrote to stderr). For tests that keep a
    start-up path light."""
    probe = (f"{code}\nimport json as _json, sys as _sys\n"
             f"print(_json.dumps(sorted(set(_sys.modules).intersection({sorted(set(watched))!r}))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    *printed, last = done.stdout.splitlines()
    return printed, json.loads(last), done.stderr
