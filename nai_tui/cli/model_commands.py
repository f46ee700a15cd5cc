"""`nai model register JOB --name M`: a finished job's outputs as a model version, made
on the server (nothing is pulled or uploaded), and how `nai model show` prints what a
version knows of the job it came from (lineage, metrics: best and last).

    nai model register JOB --name NAME [--path outputs/sub] [--metric M [--min|--max]]
                       [--with-code] [--group G] [--tag T] [--description TEXT]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from typing import Any

from nai_server.protocol import RegistryVersion, format_size
from nai_tui.cli.contract import UsageMistake
from nai_tui.cli.output import emit_json, note, table
from nai_tui.cli.process_command import lineage_line
from nai_tui.remote.client import ServerClient


def cmd_register(args: argparse.Namespace, client: ServerClient) -> int:
    if args.direction and not args.metric:
        raise UsageMistake(f"--{args.direction} says which way --metric is better: give "
                           f"--metric NAME too (e.g. --metric val_loss --min)")
    v = client.model_from_job(
        args.name, args.job, path=args.path, group=args.group, tag=args.tag,
        description=args.description, metric=args.metric, direction=args.direction,
        with_code=args.with_code or None)
    if args.json:
        emit_json(v)
        return 0
    print(f"{args.name}@{v.version}")
    note(f"model {args.name}@{v.version}" + (f" ({v.tag})" if v.tag else "") +
         f": {v.files} files, {format_size(v.size)}, from job {args.job}" +
         (f" ({args.path})" if args.path else ""))
    summary = v.metadata.get("summary") or {}
    if summary:
        note(metrics_table(summary, _chosen(v)))
    else:
        note("the job reported no metrics (see `nai metrics --help`)")
    return 0


def _chosen(v: RegistryVersion) -> str | None:
    metric = v.metadata.get("metric")
    return metric.get("name") if isinstance(metric, Mapping) else None


def _value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    if isinstance(value, float) and (value == 0 or 1e-4 <= abs(value) < 1e6):
        return f"{value:.6g}"
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def _step(value: Any) -> str:
    return "-" if value is None else str(value)


def metrics_table(summary: Mapping[str, Any], chosen: str | None = None) -> str:
    """Best and last of each metric, the chosen one first and starred."""
    names = sorted(summary, key=lambda n: (n != chosen, n))
    rows = []
    for name in names:
        s = summary[name]
        if not isinstance(s, Mapping):
            continue
        arrow = "lower" if s.get("direction") == "min" else "higher"
        rows.append([("* " if name == chosen else "") + name, _value(s.get("best")),
                     _step(s.get("best_step")), _value(s.get("last")), _step(s.get("last_step")),
                     f"{arrow} is better", s.get("count", "-")])
    return table(rows, ["METRIC", "BEST", "AT STEP", "LAST", "AT STEP", "", "POINTS"])


def metric_cell(metric: Mapping[str, Any] | None) -> str:
    """A listing's cell for a version's chosen metric: `val_ppl 20.5`."""
    if not metric:
        return ""
    return f"{metric.get('name', '?')} {_value(metric.get('best'))}"


def lineage_lines(v: RegistryVersion) -> list[str]:
    """Where a version came from, in words (empty for a pushed folder)."""
    lineage = v.metadata.get("lineage")
    if not isinstance(lineage, Mapping):
        return []
    made_by = lineage.get("processor") or lineage.get("annotator")
    if made_by and (made := lineage_line(v.metadata)):
        return [f"  from:     {made}"]  # dataset process/annotate: input, plugin, job or session
    parts = []
    if lineage.get("job") is not None:
        source = v.metadata.get("source")
        path = source.get("path") if isinstance(source, Mapping) else ""
        parts.append(f"job {lineage['job']}" + (f" (outputs at {path})" if path else ""))
    for key in ("datasets", "models"):
        refs = lineage.get(key) or []
        if refs:
            parts.append(f"{key[:-1]} {', '.join(map(str, refs))}")
    if lineage.get("code_tree"):
        parts.append(f"code {str(lineage['code_tree'])[:12]}")
    return [f"  from:     {'; '.join(parts)}"] if parts else []


def version_details(v: RegistryVersion) -> list[str]:
    """The lines `nai model show NAME[@V]` adds for a version made from a job: its
    lineage, the chosen metric and the summary of every metric."""
    lines = lineage_lines(v)
    summary = v.metadata.get("summary")
    if isinstance(summary, Mapping) and summary:
        chosen = _chosen(v)
        if chosen and chosen not in summary:
            lines.append(f"  metric:   {chosen} (the job never reported it)")
        partial = " (from the end of a long metrics file)" if v.metadata.get(
            "summary_partial") else ""
        lines.append(f"  metrics{partial}:")
        lines += ["    " + row for row in metrics_table(summary, chosen).splitlines()]
    return lines


def add_register_verb(verb: Any) -> None:
    """`nai model register`, added among the model verbs."""
    p = verb("register", cmd_register, "make a finished job's outputs a new version of a "
             "model, on the server (nothing is downloaded)")
    p.add_argument("job", type=int, metavar="JOB")
    p.add_argument("--name", required=True, help="the model (created if new)")
    p.add_argument("--path", help="only this folder or file of the outputs, e.g. "
                   "checkpoints/best (a folder's contents become the version's top)")
    p.add_argument("--metric", help="the metric that matters, kept as the version's "
                   "headline (best and last of every metric are kept anyway)")
    way = p.add_mutually_exclusive_group()
    way.add_argument("--min", dest="direction", action="store_const", const="min",
                     help="lower is better for --metric (guessed from the name otherwise: "
                     "lower for loss, error, perplexity)")
    way.add_argument("--max", dest="direction", action="store_const", const="max",
                     help="higher is better for --metric")
    p.add_argument("--with-code", action="store_true",
                   help="keep the job's code with the outputs and its command as the "
                   "finetune command, so `nai finetune` can run it again")
    p.add_argument("--group", help="make this group the model's owner (when created)")
    p.add_argument("--tag", help="a name for this version, e.g. best or v1.0")
    p.add_argument("--description")
