"""The replica of an annotate session (`nai dataset annotate`): a service of kind
"annotator" whose process serves an annotator's web app, as the user who asked, never in
the daemon: `python -m nai_server.plugins.annotator_replica`.

It reads the annotator's name and options from its environment (set by the daemon in
the service's document), loads that one entry point of `nai.annotators`, checks the
options against those it takes (if it says: `nai_plugin_options`), asks it for its
ASGI app over the dataset version mounted read-only in the replica's directory
(`$NAI_MODEL_DIR`: a service's source, here a dataset's) and the session's output
folder (`$NAI_OUTPUT_DIR`, where the labels go, kept across the replica's restarts),
and serves it on the replica's socket (`$NAI_SERVE_SOCKET`, mode 0600), which the
daemon relays to at `/v1/services/{name}/invoke/` for those who may label.

The session ends when someone who may stop it stops it (`nai service stop`, or the
page's "Finish and save", which POSTs `/_nai/finish` to the daemon): the daemon then
saves the output folder as the dataset's next version. `GET /_nai/health` answers once
the app is up (the service's health path).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import pluggy

from nai_server.core.plugin_options import OptionsError, UnknownOptions
from nai_server.core.processing import (
    ANNOTATOR_GIVEN_VAR,
    ANNOTATOR_OPTIONS_VAR,
    ANNOTATOR_VAR,
    HEALTH_PATH,
    given_keys,
)
from nai_server.core.service_rules import NO_RESTART
from nai_server.plugins.contracts import Kind
from nai_server.plugins.process_job import check_plugin_options, failed, load_plugin

KIND = Kind.ANNOTATOR
OWN = "/_nai/"  # the runner's own paths, before the annotator's (the daemon's finish)


class AnnotateError(Exception):
    """The replica cannot serve the annotator (not installed, no hook, no dataset)."""


def load(name: str) -> pluggy.PluginManager:
    """A manager with the annotator `name` registered."""
    return load_plugin(KIND, name, "annotator", AnnotateError)


class Runner:
    """The annotator's app behind the runner's own `/_nai/` paths."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(OWN):
            await self._own(scope, send)
            return
        await self.app(scope, receive, send)

    async def _own(self, scope: dict[str, Any], send: Any) -> None:
        body: dict[str, Any]
        if scope["path"] == HEALTH_PATH:
            status, body = 200, {"ok": True}
        else:  # `/_nai/finish` is the daemon's: it never reaches a replica
            status, body = 404, {"error": f"GET {HEALTH_PATH}; POST /_nai/finish (to the "
                                          f"daemon) saves and ends the session"}
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


def bind(path: Path) -> socket.socket:
    """The app's listening socket at `path`, mode 0600 (the daemon is root)."""
    os.chdir(path.parent)  # a relative name: a socket path has at most 107 bytes
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path.name)  # left by an earlier run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path.name)
    finally:
        os.umask(old)
    os.chmod(path.name, 0o600)
    sock.listen(64)
    return sock


def run(environ: dict[str, str]) -> None:
    """Serve the annotator until the replica is told to stop (SIGTERM)."""
    import uvicorn

    name = environ.get(ANNOTATOR_VAR, "")
    options = json.loads(environ.get(ANNOTATOR_OPTIONS_VAR) or "{}")
    source, target = environ.get("NAI_MODEL_DIR"), environ.get("NAI_OUTPUT_DIR")
    where = environ.get("NAI_SERVE_SOCKET")
    if not name or not source or not target or not where:
        raise AnnotateError(f"an annotate session needs {ANNOTATOR_VAR}, a dataset, an "
                            f"output folder and a socket; start it with `nai dataset "
                            f"annotate`")
    manager = load(name)
    check_plugin_options(manager, name, options, given_keys(environ, ANNOTATOR_GIVEN_VAR),
                         f"nai dataset annotate {environ.get('NAI_MODEL') or 'DATASET'} "
                         f"--with {name}")
    app = manager.hook.nai_annotator_app(source=Path(source), target=Path(target),
                                         options=options)
    if app is None:
        raise AnnotateError(f"annotator {name!r} returned no app")
    sock = bind(Path(where))
    server = uvicorn.Server(uvicorn.Config(Runner(app), log_level="warning",
                                           access_log=False, lifespan="off"))
    service = environ.get("NAI_SERVICE", "")
    print(f"nai: annotating {environ.get('NAI_MODEL', source)} with {name} "
          f"{json.dumps(options, sort_keys=True)}; open it with `nai service forward "
          f"{service}`", flush=True)
    try:
        server.run(sockets=[sock])  # until SIGTERM
    finally:
        with contextlib.suppress(OSError):
            os.unlink(Path(where).name)


def main() -> int:
    try:
        run(dict(os.environ))
    except (AnnotateError, UnknownOptions, OptionsError) as exc:
        failed("annotator", exc)
        return NO_RESTART  # starting it again cannot help: its service fails at once
    except Exception as exc:  # the service's log is where the user looks
        failed("annotator", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
