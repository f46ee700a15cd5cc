"""`nai dataset annotate`: label a dataset version in a web app that an annotator the
server offers (`nai plugins`) serves as a job of yours.

    nai dataset annotate NAME[@VERSION] --with PLUGIN [--to NAME] [-o KEY=VALUE]...
        start it (a job on a CPU slot; `--time-limit` as for any job)
    nai dataset annotate --open JOB [--port P]
        open it: http://127.0.0.1:PORT on this machine relays to the job's app
    nai dataset annotate --finish JOB
        end it cleanly: the labels become the dataset's next version (or `--to`'s)

The app is reached through the daemon, as you: only those who may read the job (you,
your group for a group job, admins) can open it. `nai cancel JOB` ends it too (the
labels made so far are still saved as the next version); near its time limit it
finishes by itself."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx

from nai_server.protocol import Invalid, JobInfo, NaiError, Unavailable
from nai_tui.cli.commands import submitted
from nai_tui.cli.output import note
from nai_tui.cli.process_command import options_of
from nai_tui.cli.services import serve_until_interrupted
from nai_tui.remote.api_base import connection_errors
from nai_tui.remote.client import ServerClient
from nai_tui.remote.service_calls import inner_path

OPEN_WAIT = 120.0  # seconds --open waits for a job that is starting
READ_TIMEOUT = 150.0


def app_path(job_id: int, path: str = "") -> str:
    return f"/v1/jobs/{job_id}/app/{inner_path(path)}"


class JobAppClient:
    """What the service forwarder asks of a client, pointed at a job's app."""

    def __init__(self, client: ServerClient, job_id: int) -> None:
        self.client, self.job_id = client, job_id

    @contextlib.contextmanager
    def invoke_stream(self, _name: str, path: str, *, method: str = "GET",
                      content: Any = None, headers: dict[str, str] | None = None,
                      **_: Any) -> Iterator[httpx.Response]:
        with connection_errors(self.client.name), self.client.http.stream(
                method, app_path(self.job_id, path), content=content, headers=headers,
                timeout=httpx.Timeout(30.0, read=READ_TIMEOUT)) as response:
            yield response


def wait_until_up(client: ServerClient, job_id: int, wait: float = OPEN_WAIT) -> None:
    """Return once the job's app answers; its error if it cannot (not yours, ended)."""
    deadline, told = time.monotonic() + wait, False
    while True:
        try:
            client._json("GET", app_path(job_id, "_nai/health"))
            return
        except Unavailable as exc:
            starting = "queued" in str(exc) or "try again" in str(exc)
            if not starting or time.monotonic() >= deadline:
                raise
            if not told:
                note(f"waiting for job {job_id}'s app to start…")
                told = True
            time.sleep(1.0)


def cmd_open(args: argparse.Namespace, client: ServerClient) -> int:
    from nai_tui.remote.forward import ServiceForwarder

    wait_until_up(client, args.open)
    try:
        forwarder = ServiceForwarder(JobAppClient(client, args.open),  # type: ignore[arg-type]
                                     f"job-{args.open}", args.port,
                                     on_error=lambda m: note(f"forward: {m}"))
    except OSError as exc:
        raise NaiError(f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}); "
                       f"pick another --port") from None
    print(f"http://127.0.0.1:{forwarder.port}/", flush=True)
    note(f"job {args.open}'s app on {client.name} is at http://127.0.0.1:{forwarder.port}/; "
         f"Ctrl-C stops this forward (the job goes on: `nai dataset annotate --finish "
         f"{args.open}` saves and ends it)")
    return serve_until_interrupted(forwarder)


def cmd_annotate(args: argparse.Namespace, client: ServerClient) -> int:
    if args.open is not None:
        return cmd_open(args, client)
    if args.finish is not None:
        client._json("POST", app_path(args.finish, "_nai/finish"))
        note(f"job {args.finish} is finishing; its labels become a new dataset version "
             f"(`nai show {args.finish}` names it once it has ended)")
        return 0
    if not args.ref or not args.plugin:
        raise Invalid("give the dataset and the annotator: nai dataset annotate "
                      "NAME[@VERSION] --with PLUGIN (or --open JOB, --finish JOB)")
    name, _, version = args.ref.partition("@")
    body = {"version": version or "latest", "plugin": args.plugin,
            "options": options_of(args.option),
            **{k: v for k, v in (("to", args.to), ("time_limit", args.time_limit),
                                 ("name", args.name), ("group", args.group))
               if v is not None}}
    job = client._reply(JobInfo, client._json("POST", f"/v1/datasets/{name}/annotate", json=body))
    code = submitted(args, client, job)
    note(f"open it with `nai dataset annotate --open {job.id}`; save and end it with "
         f"`nai dataset annotate --finish {job.id}`")
    return code


def add_annotate_verb(verb: Any) -> None:
    """`annotate` under `nai dataset` (`verb` as in registry_commands)."""
    p = verb("annotate", cmd_annotate, "label a dataset version in an annotator's web app "
             "run as your job; its labels become a new version")
    p.add_argument("ref", nargs="?", metavar="NAME[@VERSION]")
    p.add_argument("--with", dest="plugin", metavar="PLUGIN",
                   help="the annotator (`nai plugins` lists them)")
    p.add_argument("--to", metavar="NAME",
                   help="make the labels a version of this dataset (default: the same)")
    p.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="an option for the annotator, repeatable (e.g. -o classes=cat,dog)")
    p.add_argument("--time-limit", help="e.g. 2h; the session saves and ends before it")
    p.add_argument("--name", help="the job's name")
    p.add_argument("--group", help="run and own the labels for this group")
    p.add_argument("--open", type=int, metavar="JOB",
                   help="serve the job's app on http://127.0.0.1:PORT here")
    p.add_argument("--port", type=int, default=0, help="with --open (default: any free)")
    p.add_argument("--finish", type=int, metavar="JOB",
                   help="save and end the session: its labels become a new version")
    p.add_argument("--follow", action="store_true",
                   help="stream the log and exit with the job's exit code")
