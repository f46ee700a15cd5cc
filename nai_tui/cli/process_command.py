"""`nai dataset process NAME[@VERSION] --with PLUGIN [--to NAME] [-o KEY=VALUE]...`: run a
dataset processor the server offers (`nai plugins`) over a dataset version, as a job of
yours; on success its output becomes the next version of the dataset (or of `--to`),
whose lineage names the input version, the processor and its options. The job is like
any other: `nai logs`, `nai cancel`, `--follow` (which exits with the job's status).
The daemon never imports the processor, so the job is what checks the options: one the
processor does not take (if it declares those it takes) fails it before any file is
read, its log ending with the key, the closest option, and the list of them."""

from __future__ import annotations

import argparse
from typing import Any

from nai_tui.cli.commands import submitted
from nai_tui.cli.contract import UsageMistake, count
from nai_tui.cli.output import note
from nai_tui.remote.client import ServerClient


def options_of(pairs: list[str] | None) -> dict[str, str]:
    """`-o key=value` pairs as a mapping (a later key wins)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UsageMistake(f"-o {pair!r}: write KEY=VALUE, e.g. -o seed=7")
        out[key] = value
    return out


def lineage_line(metadata: dict[str, Any]) -> str | None:
    """`photos@1 by split 0.1 (seed=7) in job 12` (or `in session S, labelled by U`):
    what a version was made from."""
    lineage = metadata.get("lineage")
    if not isinstance(lineage, dict):
        return None
    parts = [", ".join(map(str, [*(lineage.get("datasets") or []),
                                 *(lineage.get("models") or [])]))]
    processor = lineage.get("processor") or lineage.get("annotator")
    if isinstance(processor, dict):
        options = processor.get("options") or {}
        parts.append(f"by {processor.get('plugin')}"
                     + (f" {processor['version']}" if processor.get("version") else "")
                     + (f" ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})"
                        if isinstance(options, dict) and options else ""))
    if lineage.get("job") is not None:
        parts.append(f"in job {lineage['job']}")
    elif lineage.get("service"):  # an annotate session's labels
        people = ", ".join(map(str, lineage.get("labelled_by") or []))
        parts.append(f"in session {lineage['service']}" + (f", labelled by {people}"
                                                            if people else ""))
    return " ".join(p for p in parts if p) or None


def cmd_process(args: argparse.Namespace, client: ServerClient) -> int:
    name, _, version = args.ref.partition("@")
    job = client.process_dataset(name, args.plugin, version=version or "latest",
                                 options=options_of(args.option), to=args.to,
                                 gpus=args.gpus, time_limit=args.time_limit,
                                 name=args.name, group=args.group)
    status = submitted(args, client, job)
    if not args.follow:  # the processor checks its options in the job, not here
        note(f"`nai logs {job.id} -f` follows it; if it fails, its log ends with why (an "
             f"option {args.plugin} does not take fails it at once, listing those it takes)")
    return status


def add_process_verb(verb: Any) -> None:
    """`process` under `nai dataset` (`verb` as in registry_commands)."""
    p = verb("process", cmd_process, "process a dataset version with a processor the "
             "server offers, as your job; its output becomes a new dataset version")
    p.add_argument("ref", metavar="NAME[@VERSION]")
    p.add_argument("--with", dest="plugin", required=True, metavar="PLUGIN",
                   help="the dataset processor (`nai plugins` lists them)")
    p.add_argument("--to", metavar="NAME",
                   help="make the output a version of this dataset (default: the same)")
    p.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="an option for the processor, repeatable; one it does not take "
                   "fails the job at once, its log listing those it takes")
    p.add_argument("--gpus", type=count, default=0, help="GPUs for the job (default: 0)")
    p.add_argument("--time-limit", help="e.g. 2h, 30m")
    p.add_argument("--name", help="the job's name")
    p.add_argument("--group", help="run and own the output for this group")
    p.add_argument("--follow", action="store_true",
                   help="stream the log and exit with the job's exit code")
