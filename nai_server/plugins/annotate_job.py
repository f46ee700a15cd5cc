"""The job that serves an annotator's web app (`nai dataset annotate`), as the user who
asked, never in the daemon: `python -m nai_server.plugins.annotate_job`.

It reads the annotator's name and options from its environment (set by the daemon in
the job's spec), loads that one entry point of `nai.annotators`, asks it for its ASGI
app over the job's read-only dataset (`$NAI_DATASET_DIR`) and output folder
(`$NAI_OUTPUT_DIR`, where the labels go), and serves it on a unix socket of mode 0600
in the job's own folder (`code/annotate.sock`), which the daemon relays to at
`/v1/jobs/{id}/app/` for those who may read the job.

The job ends cleanly (exit 0, so its output becomes the dataset's next version) when
someone who may read it posts to `/_nai/finish` (`nai dataset annotate --finish JOB`),
when it gets SIGTERM or SIGINT from outside nai, or a little before its time limit.
Cancelling the job (`nai cancel`) ends it too: it stays `cancelled`, and the labels made
so far are saved as the next version all the same (`core.processing.keeps_labels`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import pluggy

from nai_server.core.processing import (
    ANNOTATE_UNTIL_VAR,
    ANNOTATOR_OPTIONS_VAR,
    ANNOTATOR_VAR,
    APP_DIR,
    APP_SOCKET,
)
from nai_server.plugins.contracts import Kind
from nai_server.plugins.process_job import load_plugin

KIND = Kind.ANNOTATOR
OWN = "/_nai/"  # the runner's own paths, before the annotator's


class AnnotateError(Exception):
    """The job cannot serve the annotator (not installed, no hook, no dataset)."""


def load(name: str) -> pluggy.PluginManager:
    """A manager with the annotator `name` registered."""
    return load_plugin(KIND, name, "annotator", AnnotateError)


def margin(seconds: int) -> float:
    """How long before its time limit the job ends itself, so its labels are kept."""
    return max(5.0, min(60.0, seconds * 0.1))


def session_age() -> float:
    """Seconds since this job's session began (its launcher's wrapper leads it, started
    when the job's time began to count); 0 when /proc cannot say."""
    try:
        with open(f"/proc/{os.getsid(0)}/stat") as stat:
            start = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as uptime:
            now = float(uptime.read().split()[0])
        return max(0.0, now - start / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class Runner:
    """The annotator's app behind the runner's own `/_nai/` paths."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.finish = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(OWN):
            await self._own(scope, send)
            return
        await self.app(scope, receive, send)

    async def _own(self, scope: dict[str, Any], send: Any) -> None:
        what = scope["path"][len(OWN):]
        body: dict[str, Any]
        if what == "finish" and scope["method"] == "POST":
            self.finish.set()
            status, body = 200, {"finishing": True}
        elif what == "health":
            status, body = 200, {"ok": True}
        else:
            status, body = 404, {"error": "POST /_nai/finish ends the job; GET /_nai/health"}
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


def bind(folder: Path) -> socket.socket:
    """The app's listening socket in `folder`, mode 0600 (the daemon is root)."""
    os.chdir(folder)  # a relative name: a socket path has at most 107 bytes
    with contextlib.suppress(FileNotFoundError):
        os.unlink(APP_SOCKET)  # left by an earlier run of this job
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(APP_SOCKET)
    finally:
        os.umask(old)
    os.chmod(APP_SOCKET, 0o600)
    sock.listen(64)
    return sock


def run(environ: dict[str, str]) -> None:
    """Serve the annotator until it is finished."""
    import uvicorn

    name = environ.get(ANNOTATOR_VAR, "")
    options = json.loads(environ.get(ANNOTATOR_OPTIONS_VAR) or "{}")
    source, target = environ.get("NAI_DATASET_DIR"), environ.get("NAI_OUTPUT_DIR")
    job_dir = environ.get("NAI_JOB_DIR")
    if not name or not source or not target or not job_dir:
        raise AnnotateError(f"an annotate job needs {ANNOTATOR_VAR}, a dataset and an output "
                            f"folder; submit it with `nai dataset annotate`")
    manager = load(name)
    app = manager.hook.nai_annotator_app(source=Path(source), target=Path(target),
                                         options=options)
    if app is None:
        raise AnnotateError(f"annotator {name!r} returned no app")
    runner = Runner(app)
    sock = bind(Path(job_dir) / APP_DIR)
    server = uvicorn.Server(uvicorn.Config(runner, log_level="warning", access_log=False,
                                           lifespan="off"))
    seconds = environ.get(ANNOTATE_UNTIL_VAR)
    if seconds:
        left = int(seconds) - margin(int(seconds)) - session_age()
        timer = threading.Timer(max(0.0, left), runner.finish.set)
        timer.daemon = True
        timer.start()

    def watch() -> None:
        runner.finish.wait()
        server.should_exit = True

    threading.Thread(target=watch, daemon=True).start()
    print(f"nai: annotating {source} with {name} {json.dumps(options, sort_keys=True)}; "
          f"open it with `nai dataset annotate --open {environ.get('NAI_JOB_ID')}`",
          flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        runner.finish.set()
        with contextlib.suppress(OSError):
            os.unlink(APP_SOCKET)


def main() -> int:
    try:
        run(dict(os.environ))
    except Exception as exc:  # the job's log is where the user looks
        traceback.print_exc()
        print(f"nai: annotator failed: {type(exc).__name__}: {exc}", file=sys.stderr,
              flush=True)
        return 1
    print("nai: done; the labels become the new dataset version", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
