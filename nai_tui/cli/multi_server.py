"""Several nai servers from one client (issue 21): `nai jobs|gpus --all-servers` list
every configured server side by side, `nai submit --server auto` submits where the job
starts first, and `nai submit --dry-run` shows what a submit would do.

Every server is asked at once (`nai_tui.remote.fan_out`); one that fails, or has not
answered within `--timeout` seconds, is shown as down with its reason in one line,
while the others' answers are shown as usual."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nai_server.protocol import JobInfo, NaiError, format_elapsed, format_size
from nai_tui.cli import commands, output
from nai_tui.cli.contract import UsageMistake
from nai_tui.cli.output import emit_json, note, table
from nai_tui.config import ClientConfig, ConfigError, ServerEntry
from nai_tui.remote import fan_out
from nai_tui.remote.client import ServerClient
from nai_tui.remote.fan_out import DEFAULT_TIMEOUT, Answer

AUTO = "auto"  # `--server auto`


def ask_all(entries: Sequence[ServerEntry], ask: Callable[[ServerClient], Any],
            timeout: float = DEFAULT_TIMEOUT) -> list[Answer]:
    """`fan_out.ask_all` through the batch commands' connections."""
    return fan_out.ask_all(entries, commands.connect, ask, timeout)


def servers(config: ClientConfig) -> list[ServerEntry]:
    """Every configured server, the default first."""
    if not config.servers:
        raise ConfigError("no servers configured: add them with `nai server add NAME "
                          "ssh://user@host` (--all-servers and --server auto use them all)")
    return sorted(config.servers.values(), key=lambda e: e.name != config.default)


def _report_down(answers: Sequence[Answer]) -> int:
    """Say which servers did not answer (stderr); the exit status: 1 when none did."""
    for a in answers:
        if a.error is not None:
            note(f"{a.server}: {a.status}: {a.error}")
    return 0 if any(a.error is None for a in answers) else 1


# --- listings -------------------------------------------------------------------------


def cmd_jobs(args: argparse.Namespace, config: ClientConfig) -> int:
    """`nai jobs --all-servers`: every server's jobs, newest submitted first."""
    answers = ask_all(servers(config), lambda c: commands.fetch_jobs(c, args)[0],
                      args.timeout)
    rows = sorted(((a.server, j) for a in answers if a.error is None for j in a.value),
                  key=lambda row: -row[1].submitted_at)[:args.limit]
    if args.json:
        emit_json({"jobs": [{"server": s, **j.model_dump(mode="json")} for s, j in rows],
                   "servers": [a.to_dict() for a in answers]})
    else:
        print(table([[s, *output.job_cells(j)] for s, j in rows],
                    ["SERVER", *output.JOB_HEADERS]))
    return _report_down(answers)


def cmd_gpus(args: argparse.Namespace, config: ClientConfig) -> int:
    """`nai gpus --all-servers`: every server's GPUs."""
    answers = ask_all(servers(config), lambda c: c.gpus(), args.timeout)
    up = [a for a in answers if a.error is None]
    if args.json:
        emit_json({"gpus": [{"server": a.server, **g.model_dump(mode="json")}
                            for a in up for g in a.value.gpus],
                   "servers": [{**a.to_dict(), **({"source": a.value.source,
                                                  "cpu_slots": a.value.cpu_slots,
                                                  "cpu_slots_used": a.value.cpu_slots_used}
                                                 if a.error is None else {})}
                               for a in answers]})
    else:
        rows = [[a.server, *output.gpu_cells(g)] for a in up for g in a.value.gpus]
        print(table(rows, ["SERVER", *output.GPU_HEADERS]))
        for a in up:
            note(f"{a.server}: source {a.value.source}; CPU slots "
                 f"{a.value.cpu_slots_used}/{a.value.cpu_slots} in use")
    return _report_down(answers)


# --- dry run and --server auto --------------------------------------------------------


def wait_of(job: JobInfo) -> float:
    """Seconds until the job would start (inf: not known), by the server's own clock
    (both ends of the difference are the server's: no clock skew between servers)."""
    return math.inf if job.est_start is None else max(0.0, job.est_start - job.submitted_at)


def start_words(job: JobInfo) -> str:
    wait = wait_of(job)
    if wait == math.inf:
        words = "start not known (it waits on jobs without a time limit)"
    elif wait < 1:
        words = "starts now"
    else:
        words = f"starts in about {format_elapsed(wait)}"
    return words + (f", waiting for {job.reason}" if job.reason else "")


def choose(answers: Sequence[Answer]) -> Answer:
    """The server where the job starts first; among equal ones, the first (the default
    server leads). A server that refused the job (it lacks the dataset, the job does
    not fit...) or did not answer is passed over."""
    up = [a for a in answers if a.error is None]
    if not up:
        raise NaiError("no server can take this job: " + "; ".join(
            f"{a.server}: {a.status}: {a.error}" for a in answers))
    return min(up, key=lambda a: wait_of(a.value))


def _spec(args: argparse.Namespace, spec_file: Path | None) -> tuple[Path, dict[str, Any]]:
    if args.follow and args.dry_run:
        raise UsageMistake("--dry-run submits nothing: there is no log to --follow")
    if getattr(args, "array", None) is not None:
        from nai_tui.cli import array_submit

        array_submit.check_flags(args)
    return commands.spec_request(Path(args.dir), spec_file, **commands.submit_overrides(args))


def dry_run(args: argparse.Namespace, client: ServerClient, spec_file: Path | None) -> int:
    """`nai submit --dry-run`: what would run and when, without sending the code."""
    _, request = _spec(args, spec_file)
    job = client.submit(**request, dry_run=True)
    if args.json:
        emit_json(job)
        return 0
    print("\n".join(plan_lines(client.name, job)))
    return 0


def plan_lines(server: str, job: JobInfo) -> list[str]:
    spec = job.spec
    gpus = spec.get("gpus", 1)
    name = spec.get("name") or "a job (named by its id once submitted)"
    lines = [f"would submit {name} to {server} (dry run: nothing sent, nothing queued)",
             f"  command:    {spec.get('command')}",
             f"  gpus:       {gpus or 'none (CPU only)'}" + (
                 f", {format_size(spec['gpu_memory'])} free each"
                 if spec.get("gpu_memory") else ""),
             f"  time limit: {format_elapsed(spec['time_limit'])}"
             if spec.get("time_limit") else "  time limit: none"]
    for kind in ("dataset", "model"):
        ref = getattr(job, kind)
        if ref:
            lines.append(f"  {kind + ':':<11} {ref['name']}@{ref['version']}")
    if spec.get("env"):
        lines.append(f"  env:        {', '.join(sorted(spec['env']))}")
    lines.append(f"  start:      {start_words(job)}")
    return lines


def copy_hints(chosen: Answer, answers: Sequence[Answer]) -> list[str]:
    """For each server passed over for lacking the job's dataset or model version (which
    the chosen one has), how to copy it there."""
    hints = []
    for a in answers:
        if a.code != "not_found" or a.error is None:
            continue
        for kind in ("dataset", "model"):
            pin = getattr(chosen.value, kind)
            if pin and pin["name"] in a.error:
                hints.append(f"{a.server} lacks {kind} {pin['name']}@{pin['version']}; to "
                             f"run such jobs there too: nai {kind} copy {pin['name']}@"
                             f"{pin['version']} --from {chosen.server} --to {a.server}")
    return hints


def submit_auto(args: argparse.Namespace, config: ClientConfig) -> int:
    """`nai submit --server auto`: a dry run on every server, then the submit to the one
    where the job starts first (see `choose`), saying which and why."""
    spec_file = Path(args.file).resolve() if args.file else None
    folder, request = _spec(args, spec_file)
    entries = servers(config)
    answers = ask_all(entries, lambda c: c.submit(**request, dry_run=True), args.timeout)
    chosen = choose(answers)
    others = [f"{a.server}: {start_words(a.value)}" if a.error is None
              else f"{a.server}: {a.status}: {a.error}" for a in answers if a is not chosen]
    note(f"chose {chosen.server}: {start_words(chosen.value)}" +
         (f" ({'; '.join(others)})" if others else ""))
    for hint in copy_hints(chosen, answers):
        note(hint)
    if args.dry_run:
        if args.json:
            emit_json({"server": chosen.server, "job": chosen.value.model_dump(mode="json"),
                       "servers": [{**a.to_dict(), **({"est_start": a.value.est_start,
                                                       "reason": a.value.reason}
                                                      if a.error is None else {})}
                                   for a in answers]})
        else:
            print("\n".join(plan_lines(chosen.server, chosen.value)))
        return 0
    entry = next(e for e in entries if e.name == chosen.server)
    with commands.connect(entry) as client:
        if args.array is not None:
            from nai_tui.cli import array_submit

            return array_submit.submit_array(args, client, folder, spec_file,
                                             extra={"server": chosen.server})
        job = commands.submit_folder(client, folder, spec_file, yes=args.yes,
                                     **commands.submit_overrides(args))
        return commands.submitted(args, client, job, extra={"server": chosen.server})


# --- where `nai` sends these commands -------------------------------------------------


def wanted(args: argparse.Namespace) -> bool:
    """Whether the command line asks for several servers rather than one."""
    return bool(getattr(args, "all_servers", False)) or args.server == AUTO


def run(args: argparse.Namespace) -> int:
    config = ClientConfig.load()
    if args.server == AUTO:
        if args.subcommand != "submit":
            raise UsageMistake(f"--server {AUTO} chooses a server for `nai submit` only; "
                              f"give a server's name for `nai {args.subcommand}`")
        return submit_auto(args, config)
    return int(args.multi(args, config))


def flags(p: argparse.ArgumentParser, multi: Callable[..., int] | None = None) -> None:
    """`--all-servers` (with the listing `multi` to run) and `--timeout`."""
    if multi is not None:
        p.add_argument("--all-servers", action="store_true",
                       help="every configured server, side by side (a SERVER column)")
        p.set_defaults(multi=multi)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="with several servers: how long each has to answer before it is "
                   f"shown as down (default {DEFAULT_TIMEOUT:g})")
