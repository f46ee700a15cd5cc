"""`nai serve`, `nai services` and `nai service VERB`: models served as web services.

    nai serve MODEL[@VERSION] [--name N] [--gpus K] [--replicas R] [--group G]
              [--visibility private|group|shared] [--idle-timeout 30m]
              [--max-batch B --max-wait-ms MS] [--public] [--wait]
    nai services [--json]
    nai service show NAME | logs NAME [--replica I] [-f] | stop NAME
    nai service update NAME --model MODEL@V [--wait] | scale NAME --replicas R
    nai service forward NAME [--port P]
    nai service token create NAME [--label L] | token list NAME | token revoke NAME ID

stdout carries data (tables, JSON with --json, the forward's URL), stderr the rest.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from nai_server.protocol import (
    NaiError,
    ServiceCreate,
    ServiceInfo,
    ServiceState,
    ServiceUpdate,
    format_elapsed,
)
from nai_tui.cli.contract import INTERRUPTED, UsageMistake, count, json_flag
from nai_tui.cli.names import name_problem
from nai_tui.cli.output import emit_json, note, table
from nai_tui.remote.client import ServerClient

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
WAIT_LIMIT = 600.0
M = TypeVar("M", bound=BaseModel)  # --wait: how long a replica may take to load its model


def duration(text: str) -> float:
    """`--idle-timeout`: seconds, or 90s, 30m, 2h, 1d."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration (e.g. 600, 30m, 2h): {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def build(request: type[M], /, **fields: Any) -> M:
    """A request, or a usage mistake (exit 2) naming each option whose value the server
    would refuse."""
    try:
        return request(**fields)
    except ValidationError as exc:
        raise UsageMistake("; ".join(_problem(e) for e in exc.errors()) + " (see --help)") from None


def _problem(error: Any) -> str:
    field = "-".join(map(str, error["loc"]))
    if field == "model":
        return f"{error['input']!r}: write a model version as NAME@VERSION (or NAME@TAG)"
    if error["type"] == "string_pattern_mismatch":
        return name_problem(f"--{field}", str(error["input"])) or error["msg"]
    return f"--{field.replace('_', '-')}: {error['msg'].lower()}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def service_rows(services: list[ServiceInfo]) -> str:
    """The `nai services` table (the TUI's list shows the same columns)."""
    rows = []
    for s in services:
        ready = sum(r.state == ServiceState.READY for r in s.replica_info)
        rows.append([s.name, s.source(), s.state, f"{ready}/{s.replicas}",
                     s.gpus * s.replicas, f"{s.stats.per_second:.1f}", _ms(s.stats.p50_ms),
                     _ms(s.stats.p99_ms)])
    return table(rows, ["NAME", "MODEL", "STATE", "READY", "GPUS", "REQ/S", "P50", "P99"])


def describe(s: ServiceInfo) -> str:
    """`nai service show`: the service, its replicas and their request metrics."""
    owner = f"group {s.owner['group']}" if "group" in s.owner else s.owner.get("user", "?")
    lines = [f"service {s.name}: {s.source()}, {s.state}",
             f"  owner {owner} (runs as {s.user}), {s.visibility}"
             + (", public on the gateway" if s.public else ""),
             f"  replicas {s.replicas} × {s.gpus} GPU(s)"
             + (f", idle timeout {format_elapsed(s.idle_timeout)}" if s.idle_timeout else "")
             + (f", batches of up to {s.max_batch} (wait {s.max_wait_ms or 0:g} ms)"
                if s.max_batch and s.max_batch > 1 else ""),
             f"  requests {s.stats.requests} ({s.stats.errors} errors), "
             f"{s.stats.per_second:.1f}/s, p50 {_ms(s.stats.p50_ms)}, p99 {_ms(s.stats.p99_ms)}"]
    if s.kind == "annotator":
        lines.append(f"  labels saved as {s.saved}" if s.saved else
                     f"  labels go to dataset {s.labels_to} when it stops "
                     f"(`nai service stop {s.name}`)")
    if s.message:
        lines.append(f"  message: {s.message}")
    if s.replica_info:
        now = time.time()
        rows = [[r.index, r.state, r.model, ",".join(map(str, r.gpus)) or "cpu", r.pid or "-",
                 format_elapsed(now - r.started_at) if r.started_at else "-", r.restarts,
                 r.stats.requests, _ms(r.stats.p50_ms), r.message or ""]
                for r in s.replica_info]
        lines += ["", table(rows, ["REPLICA", "STATE", "MODEL", "GPUS", "PID", "UP",
                                   "RESTARTS", "REQUESTS", "P50", "MESSAGE"])]
    return "\n".join(lines)


def wait_ready(client: ServerClient, name: str, model: str | None = None,
               limit: float = WAIT_LIMIT) -> ServiceInfo:
    """Poll until the service is ready (serving `model`, when given) or has failed."""
    deadline = time.monotonic() + limit
    while True:
        s = client.service(name)
        serving = model is None or any(r.model == s.model and r.state == ServiceState.READY
                                       for r in s.replica_info)
        if s.state == ServiceState.READY and serving:
            return s
        if s.state in (ServiceState.FAILED, ServiceState.STOPPED):
            raise NaiError(f"service {name} {s.state}: {s.message or 'no message'}; "
                           f"`nai service logs {name}` shows its replica's output")
        if time.monotonic() > deadline:
            raise NaiError(f"service {name} is still {s.state} after {limit:.0f}s; "
                           f"`nai service logs {name} -f` shows what its replica does")
        time.sleep(0.5)


# --- commands -------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, client: ServerClient) -> int:
    name = args.name or args.model.partition("@")[0].lower()
    request = build(ServiceCreate, name=name, model=args.model, gpus=args.gpus,
                            gpu_memory=args.gpu_memory, replicas=args.replicas,
                            group=args.group, visibility=args.visibility,
                            idle_timeout=args.idle_timeout, max_batch=args.max_batch,
                            max_wait_ms=args.max_wait_ms, public=args.public)
    s = client.create_service(request)
    note(f"service {s.name}: {s.model}, {s.replicas} replica(s) × {s.gpus} GPU(s), {s.state}")
    if args.wait:
        s = wait_ready(client, s.name)
        note(f"service {s.name} ready")
    if args.json:
        emit_json(s)
    else:
        print(s.name)
    note(f"call it: `nai service forward {s.name} --port 8080`, then "
         f"curl localhost:8080/predict -d '{{\"inputs\": ...}}'")
    return 0


def cmd_services(args: argparse.Namespace, client: ServerClient) -> int:
    services = client.services().services
    if args.json:
        emit_json([s.model_dump(mode="json") for s in services])
    elif services:
        print(service_rows(services))
    else:
        note("no services; start one with `nai serve MODEL@VERSION --name NAME`")
    return 0


def cmd_show(args: argparse.Namespace, client: ServerClient) -> int:
    s = client.service(args.name)
    if args.json:
        emit_json(s)
    else:
        print(describe(s))
    return 0


def cmd_logs(args: argparse.Namespace, client: ServerClient) -> int:
    if not args.follow:
        sys.stdout.buffer.write(client.service_logs(args.name, args.replica))
        return 0
    try:
        for chunk in client.follow_service_logs(args.name, args.replica):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    except KeyboardInterrupt:
        note(f"stopped following service {args.name}; it goes on serving")
        return INTERRUPTED
    return 0


def _show_change(args: argparse.Namespace, s: ServiceInfo, what: str) -> int:
    if args.json:
        emit_json(s)
    else:
        print(describe(s))
    note(f"service {s.name}: {what}")
    return 0


def cmd_update(args: argparse.Namespace, client: ServerClient) -> int:
    update = build(ServiceUpdate, model=args.model, visibility=args.visibility,
                           idle_timeout=args.idle_timeout, public=args.public)
    if not update.model_dump(exclude_none=True):
        raise UsageMistake("nothing to update: give --model, --visibility, --idle-timeout, "
                      "--public or --private")
    s = client.update_service(args.name, update)
    if args.model and args.wait:
        s = wait_ready(client, args.name, model=s.model)
    return _show_change(args, s, f"now {s.model}" if args.model else "updated")


def cmd_scale(args: argparse.Namespace, client: ServerClient) -> int:
    s = client.update_service(args.name, build(ServiceUpdate, replicas=args.replicas))
    return _show_change(args, s, f"{args.replicas} replica(s) wanted")


def cmd_stop(args: argparse.Namespace, client: ServerClient) -> int:
    s = client.stop_service(args.name)
    if s.kind == "annotator":  # its labels are saved once its replica is gone
        from nai_tui.cli.annotate_command import wait_saved
        s = wait_saved(client, s)
        return _show_change(args, s, f"{s.state}; labels saved as {s.saved}" if s.saved
                            else f"{s.state}; {s.message or 'labels not saved yet'}")
    return _show_change(args, s, f"{s.state}; its GPUs are free")


def cmd_forward(args: argparse.Namespace, client: ServerClient) -> int:
    client.service(args.name)  # a wrong name or no permission: said now, not per request
    return forward(client, args.name, args.port)


def forward(client: ServerClient, name: str, port: int,
            opened: Callable[[str], object] | None = None) -> int:
    """Relay 127.0.0.1:`port` to service `name` until Ctrl-C; its URL on stdout first
    (and to `opened`, e.g. a browser)."""
    from nai_tui.remote.forward import ServiceForwarder

    try:
        forwarder = ServiceForwarder(client, name, port,
                                     on_error=lambda m: note(f"forward: {m}"))
    except OSError as exc:
        raise NaiError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
                       f"pick another --port") from None
    url = f"http://127.0.0.1:{forwarder.port}"
    print(url, flush=True)
    note(f"forwarding 127.0.0.1:{forwarder.port} → service {name} on {client.name}; "
         f"Ctrl-C to stop")
    if opened is not None:
        opened(url + "/")
    return serve_until_interrupted(forwarder)


def serve_until_interrupted(forwarder: Any) -> int:
    """Relay until Ctrl-C, then say how many requests went through."""
    try:
        forwarder.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        note(f"forward stopped after {forwarder.requests} request(s)")
    finally:
        forwarder.server_close()
    return 0


def cmd_token(args: argparse.Namespace, client: ServerClient) -> int:
    if args.token_verb == "create":
        token = client.create_token(args.name, args.label or "")
        if args.json:
            emit_json(token)
        else:
            print(token.token)
        note(f"token {token.id} for service {args.name}: shown once, keep it now; send it "
             f"as `Authorization: Bearer TOKEN` to the gateway")
    elif args.token_verb == "list":
        tokens = client.tokens(args.name)
        if args.json:
            emit_json(tokens)
        else:
            print(table([[t.id, t.label, time.strftime("%Y-%m-%d %H:%M",
                                                         time.localtime(t.created_at))]
                         for t in tokens], ["ID", "LABEL", "CREATED"]))
    else:
        client.revoke_token(args.name, args.token_id)
        if args.json:
            emit_json({"revoked": args.token_id})
        note(f"token {args.token_id} of service {args.name} revoked")
    return 0


# --- the parser -----------------------------------------------------------------------


def add_service_commands(sub: Any, add: Any) -> None:
    """`serve` and `services` (through `add`, as the other commands), and `service VERB`."""
    p = add("serve", cmd_serve, "serve a model version as a web service")
    p.add_argument("model", metavar="MODEL[@VERSION]")
    p.add_argument("--name", help="the service's name (default: the model's)")
    p.add_argument("--gpus", type=count, help="GPUs per replica (default: the model's serve: "
                   "section, else 1)")
    p.add_argument("--gpu-memory", help="e.g. 8G: a GPU with this much free memory")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--group", help="make this group the service's owner")
    p.add_argument("--visibility", choices=("private", "group", "shared"), default="private",
                   help="who may call it: its owners, the owning group, or every user")
    p.add_argument("--idle-timeout", type=duration, metavar="DURATION",
                   help="release the GPUs after this long without a request (e.g. 30m); "
                   "the next request waits for a replica to start")
    p.add_argument("--max-batch", type=int, help="group up to this many concurrent "
                   "requests into one predict_batch call")
    p.add_argument("--max-wait-ms", type=float, help="how long a batch waits to fill")
    p.add_argument("--public", action="store_true", help="callable on the HTTP gateway "
                   "without a token, where the admin allows it")
    p.add_argument("--wait", action="store_true", help="return once a replica is ready")
    add("services", cmd_services, "list services: model, state, replicas, GPUs, "
        "requests/s, p50/p99")

    top = sub.add_parser("service", help="one service: show, logs, update, scale, stop, "
                         "forward, token", description="Look after one service.")
    top.set_defaults(remote=True)
    verbs = top.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, func: Any, help_text: str,
             no_json: str | None = None) -> argparse.ArgumentParser:
        v: argparse.ArgumentParser = verbs.add_parser(name, help=help_text,
                                                      description=help_text)
        v.set_defaults(func=func)
        json_flag(v, refuse=no_json)
        v.add_argument("name", metavar="NAME")
        return v

    verb("show", cmd_show, "a service, its replicas and request metrics")
    v = verb("logs", cmd_logs, "a replica's output", no_json="a log is printed as written")
    v.add_argument("--replica", type=int, default=0, help="which replica (default: 0)")
    v.add_argument("-f", "--follow", action="store_true", help="stream as it is written")
    v = verb("update", cmd_update, "serve another version (rolling: no request fails), or "
             "change who may call it")
    v.add_argument("--model", metavar="MODEL@VERSION")
    v.add_argument("--visibility", choices=("private", "group", "shared"))
    v.add_argument("--idle-timeout", type=duration, metavar="DURATION", help="0: never")
    public = v.add_mutually_exclusive_group()
    public.add_argument("--public", action="store_true", default=None)
    public.add_argument("--private", dest="public", action="store_false")
    v.add_argument("--wait", action="store_true", help="return once the new version serves")
    v = verb("scale", cmd_scale, "run more or fewer replicas (0: none, GPUs freed)")
    v.add_argument("--replicas", type=int, required=True)
    verb("stop", cmd_stop, "stop every replica and free their GPUs")
    v = verb("forward", cmd_forward, "relay a local port to the service (like ssh -L)",
             no_json="it prints the local URL, then relays until Ctrl-C")
    v.add_argument("--port", type=int, default=8080, help="on 127.0.0.1 (0: any free one)")
    token = verbs.add_parser("token", help="bearer tokens for the HTTP gateway",
                             description="Bearer tokens for the HTTP gateway.")
    token.set_defaults(func=cmd_token)
    tverbs = token.add_subparsers(dest="token_verb", metavar="VERB", required=True)
    for name, text in (("create", "a new token, shown once"), ("list", "the tokens"),
                       ("revoke", "revoke a token")):
        t = tverbs.add_parser(name, help=text, description=text)
        json_flag(t)
        t.add_argument("name", metavar="NAME")
        if name == "create":
            t.add_argument("--label", help="what it is for")
        if name == "revoke":
            t.add_argument("token_id", metavar="ID")
