"""`nai dataset annotate`: label a dataset version in the web app of an annotator the
server offers (`nai plugins`), run as a service of yours (an annotate session).

    nai dataset annotate NAME[@VERSION] --with PLUGIN [--to NAME] [-o KEY=VALUE]...
                         [--name S] [--group G] [--gpus N]
                         [--visibility private|group|shared] [--open [--port P]]

It starts the session and says how to open it: `nai service forward S --port P` relays
http://127.0.0.1:P to it through the daemon, as you (`--open` does that now and opens
a browser where there is a display). It shows in `nai services` like any service (its
health, logs, request metrics). `nai service stop S`, or the page's "Finish and save",
saves its labels as the dataset's next version (or `--to`'s) and ends it; a session
that fails keeps its labels the same way. Who may label: you (your group's members for
a `--group` session), the members of your groups (`--visibility group`, the default)
or everyone (`shared`), and only those who may read the dataset.
"""

from __future__ import annotations

import argparse
import os
import time
import webbrowser
from typing import Any

from nai_server.protocol import NaiError, NotFound, ServiceInfo
from nai_tui.cli.contract import UsageMistake, count
from nai_tui.cli.output import emit_json, note
from nai_tui.cli.process_command import options_of
from nai_tui.cli.services import describe, forward, wait_ready
from nai_tui.remote.client import ServerClient

OPEN_WAIT = 120.0  # seconds --open waits for the session's app to be up
SAVE_WAIT = 120.0  # seconds `nai service stop` waits for the labels to be saved
EXAMPLE_PORT = 8080


def wait_saved(client: ServerClient, s: ServiceInfo, wait: float = SAVE_WAIT) -> ServiceInfo:
    """The stopped session once its labels are saved (or could not be), or as it is
    after `wait` seconds."""
    deadline = time.monotonic() + wait
    while s.saved is None and not any(
            w in (s.message or "") for w in ("labels not saved", "no version saved")):
        if time.monotonic() > deadline:
            break
        time.sleep(0.3)
        try:
            s = client.service(s.name)
        except NotFound:  # removed once saved (the server keeps few stopped ones)
            break
    return s


def _browse(url: str) -> None:
    """Open `url` in a browser where there is a display; else only print it (a console
    browser would take the terminal)."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or \
            os.environ.get("BROWSER"):
        webbrowser.open(url)


def cmd_annotate(args: argparse.Namespace, client: ServerClient) -> int:
    if not args.ref or not args.plugin:
        raise UsageMistake("give the dataset and the annotator: nai dataset annotate "
                      "NAME[@VERSION] --with PLUGIN")
    name, _, version = args.ref.partition("@")
    body = {"version": version or "latest", "plugin": args.plugin,
            "options": options_of(args.option), "gpus": args.gpus,
            **{k: v for k, v in (("to", args.to), ("name", args.name), ("group", args.group),
                                 ("visibility", args.visibility)) if v is not None}}
    s = client._reply(ServiceInfo, client._json("POST", f"/v1/datasets/{name}/annotate",
                                                json=body))
    if getattr(args, "json", False):
        emit_json(s)
    else:
        print(describe(s))
    port = args.port or EXAMPLE_PORT
    note(f"annotate session {s.name}: {s.plugin} over {s.model}, labels to dataset "
         f"{s.labels_to}")
    note(f"open it: nai service forward {s.name} --port {port}  (then http://127.0.0.1:"
         f"{port}/); save and end it: nai service stop {s.name}")
    if not args.open:
        return 0
    try:
        wait_ready(client, s.name, limit=OPEN_WAIT)
    except NaiError as exc:
        raise NaiError(f"{exc}; the session is still there (`nai service stop {s.name}`)"
                       ) from None
    return forward(client, s.name, args.port, opened=_browse)


def add_annotate_verb(verb: Any) -> None:
    """`annotate` under `nai dataset` (`verb` as in registry_commands)."""
    p = verb("annotate", cmd_annotate, "label a dataset version in an annotator's web app "
             "run as your service; stopping it saves the labels as a new version")
    p.add_argument("ref", nargs="?", metavar="NAME[@VERSION]")
    p.add_argument("--with", dest="plugin", metavar="PLUGIN",
                   help="the annotator (`nai plugins` lists them)")
    p.add_argument("--to", metavar="NAME",
                   help="make the labels a version of this dataset (default: the same)")
    p.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="an option for the annotator, repeatable (e.g. -o classes=cat,dog)")
    p.add_argument("--name", help="the session's service name (default: annotate-NAME)")
    p.add_argument("--group", help="run it for this group (its members may label and "
                   "stop it), which owns the labels")
    p.add_argument("--gpus", type=count, default=0, help="GPUs for the annotator (default 0)")
    p.add_argument("--visibility", choices=["private", "group", "shared"],
                   help="who else may label, if they may read the dataset (default: group)")
    p.add_argument("--open", action="store_true",
                   help="forward it to http://127.0.0.1:PORT here once it is up, and open "
                        "a browser there")
    p.add_argument("--port", type=int, default=0, help="with --open (default: any free)")
