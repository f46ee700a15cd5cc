"""The batch commands: each parses nothing, calls the client, prints.

stdout carries data (a table, or JSON with --json); progress and errors go to
stderr. Exit statuses: `nai_tui.cli.contract` (a failed job followed with --follow
gives its own code).
"""

from __future__ import annotations

import argparse
import calendar
import sys
import time
from pathlib import Path
from typing import Any

from nai_server.protocol import TERMINAL_STATES, Conflict, Invalid, NaiError, NotFound
from nai_tui.cli import log_print, metrics_view, output
from nai_tui.cli.contract import INTERRUPTED, TIMED_OUT, UsageMistake, exit_status
from nai_tui.cli.output import emit_json, err, note, table
from nai_tui.config import cache_dir
from nai_tui.remote.client import ServerClient
from nai_tui.remote.connect import connect as connect  # tests replace it here
from nai_tui.sync import push as sync
from nai_tui.sync.bigfiles import confirm_big_upload

SPEC_FILE = "nai.yaml"


def hash_cache() -> sync.HashCache:
    return sync.HashCache(cache_dir() / "hashes.sqlite")


def exit_code_of(state: str, code: int | None) -> int:
    """What `submit --follow` exits with: the job's own code when it has one."""
    if state == "succeeded":
        return 0
    if state == "timed_out":
        return TIMED_OUT
    return code if code not in (None, 0) else 1


# --- jobs ---------------------------------------------------------------------------


def submit_folder(client: ServerClient, folder: Path, spec_file: Path | None = None, *,
                  yes: bool = False, **overrides: Any) -> Any:
    """Sync the folder's code, then submit it with its nai.yaml and the overrides. Large
    files are uploaded only when the user agrees (or `yes`)."""
    folder, request = spec_request(folder, spec_file, **overrides)
    if client.speaks("1.1"):
        # The server checks the spec, the dataset and model names, the GPUs and the
        # quota first: a typo must not cost the upload of a large folder.
        client.submit(**request, dry_run=True)
    note(f"syncing {folder} to {client.name} ...")
    tree = sync.push(client, folder, cache=hash_cache(),
                     check=confirm_big_upload(yes, warn=note))
    return client.submit(**request, code_tree=tree)


def spec_request(folder: Path, spec_file: Path | None = None,
                 **overrides: Any) -> tuple[Path, dict[str, Any]]:
    """The job folder and what `ServerClient.submit` is given for it besides the code:
    its nai.yaml (or --command) and the command line's overrides."""
    folder = folder.resolve()
    if not folder.is_dir():
        raise UsageMistake(f"{folder} is not a folder; give the folder holding your code")
    if spec_file is not None and not spec_file.is_file():
        raise UsageMistake(f"{spec_file}: no such file; give -f the path of the job's spec "
                           f"file, or leave -f out to use {SPEC_FILE} in the job's folder")
    spec_path = spec_file or folder / SPEC_FILE
    overrides = {k: v for k, v in overrides.items() if v is not None}
    command = overrides.pop("command", None)
    if spec_path.exists():
        spec_args: dict[str, Any] = {"spec_yaml": spec_path.read_text(),
                                     "source": spec_path.name}
        if command:
            overrides["command"] = command
    elif command:
        spec_args = {"spec": {"command": command}}
    else:
        raise UsageMistake(f"no {SPEC_FILE} in {folder} and no --command: write a {SPEC_FILE} "
                      f"(see jobs/ for examples) or pass --command 'python train.py'")
    return folder, {**spec_args, "overrides": overrides}


def submit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """`nai submit`'s flags that change the spec."""
    return {"gpus": args.gpus, "time_limit": args.time_limit, "name": args.name,
            "dataset": args.dataset, "model": args.model, "env": args.env or None,
            "command": args.command, "register_model": args.register_model,
            "register_metric": args.register_metric,
            "after": _flat(getattr(args, "after", None)),
            "after_ok": _flat(getattr(args, "after_ok", None))}


def _flat(lists: list[list[int]] | None) -> list[int] | None:
    """Repeated `--after 3,4 --after 9` → [3, 4, 9]; None when not given."""
    return [i for ids in lists for i in ids] if lists else None


def metric_choice(text: str) -> str | dict[str, str]:
    """`--register-metric`: `val_ppl`, or `val_ppl:min` / `val_acc:max` (the spec's
    `{name: val_ppl, direction: min}`)."""
    name, colon, direction = text.rpartition(":")
    if colon and direction in ("min", "max"):
        if not name:
            raise argparse.ArgumentTypeError(f"{text!r}: name the metric, e.g. val_loss:min")
        return {"name": name, "direction": direction}
    return text


def cmd_submit(args: argparse.Namespace, client: ServerClient) -> int:
    spec_file = Path(args.file).resolve() if args.file else None
    if args.array is not None:
        from nai_tui.cli import array_submit

        array_submit.check_flags(args)
        if args.dry_run:
            return array_submit.dry_run(args, client, spec_file)
        return array_submit.submit_array(args, client, Path(args.dir), spec_file)
    if args.dry_run:
        from nai_tui.cli import multi_server

        return multi_server.dry_run(args, client, spec_file)
    job = submit_folder(client, Path(args.dir), spec_file, yes=args.yes,
                        **submit_overrides(args))
    return submitted(args, client, job)


def submitted(args: argparse.Namespace, client: ServerClient, job: Any,
              extra: dict[str, Any] | None = None) -> int:
    """Print a submitted job (`extra` keys join its JSON); follow it with --follow."""
    # With --follow stdout carries the log alone (`--follow > train.log`): the id is in
    # the "submitted job N" line on stderr.
    if args.json and not args.follow:
        emit_json({**job.model_dump(mode="json"), **(extra or {})})
    elif not args.follow:
        print(job.id)
    pins = [f"{k} {ref['name']}@{ref['version']}" for k, ref in
            (("dataset", job.dataset), ("model", job.model)) if ref]
    note(f"submitted job {job.id} ({job.name}) to {client.name}" +
         (f" with {', '.join(pins)}" if pins else ""))
    if not args.follow:
        return 0
    try:
        return follow(client, job.id)
    except KeyboardInterrupt:
        if getattr(args, "cancel_on_interrupt", False):
            client.cancel(job.id)
            note(f"cancelled job {job.id}")
        else:
            note(f"job {job.id} is still running: `nai logs {job.id} -f` to watch, "
                 f"`nai cancel {job.id}` to stop")
        return INTERRUPTED


def cmd_finetune(args: argparse.Namespace, client: ServerClient) -> int:
    """Run a model version's own code on a dataset, its weights as the base. A version
    made by fine-tuning holds weights only: it names the version whose files hold its
    code (`finetune_code`), which runs instead, with this version as $NAI_MODEL_DIR."""
    name, _, selector = args.model.partition("@")
    version = client.registry_version("model", name, selector or "latest")
    ref = f"{name}@{version.version}"
    command = args.command or version.metadata.get("finetune_command")
    if not command:
        job = (version.metadata.get("lineage") or {}).get("job")
        again = (f"`nai model register {job} --name {name} --with-code`" if job
                 else "`nai model push` with --finetune-command")
        raise Invalid(f"model {ref} has no finetune_command: it was registered without the "
                      f"code that trains it. Say what to run in its files with --command "
                      f"'python train.py', or register it with its code ({again})")
    spec = {"name": args.name or f"finetune-{name}", "command": command,
            "model": ref, "dataset": args.dataset,
            "gpus": args.gpus, "time_limit": args.time_limit,
            "register_model": args.register_model, "register_metric": args.register_metric}
    spec = {k: v for k, v in spec.items() if v is not None}
    held = version.metadata.get("finetune_code")
    if not isinstance(held, str) or not held:
        return submitted(args, client, client.submit(spec=spec, code_from_model=True))
    code_name, _, code_version = held.partition("@")
    try:
        code = client.registry_version("model", code_name, code_version or "latest")
    except NotFound as exc:
        raise NotFound(f"model {ref} is fine-tuned by the code in {held}, which you may not "
                       f"read: ask its owner to share it ({exc.message})") from exc
    note(f"running the code of {held} on the weights of {ref}")
    return submitted(args, client, client.submit(spec=spec, code_tree=code.tree_id))


def follow(client: ServerClient, job_id: int, offset: int = 0) -> int:
    """Print the job's log as it is written (its stderr on ours), until it ends; then
    how it ended, on stderr and on a line of its own."""
    end = log_print.LogEnd()
    job = log_print.follow_log(client, job_id, end, offset=offset)
    if end.needs_newline():
        note("")
    note(f"job {job_id} {job.state}" + (f" (exit code {job.exit_code})"
                                       if job.exit_code is not None else ""))
    return exit_code_of(job.state, job.exit_code)


PAGE = 1000  # the most jobs the server lists in one answer


def since_time(text: str) -> float:
    """`--since`: a UTC date (and time), or a duration ago (3d, 12h, 30m, 45s)."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            return calendar.timegm(time.strptime(text, fmt))
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(
        f"--since: {text!r} is neither a date (2026-11-30, '2026-11-30 14:00', UTC) "
        f"nor a duration ago (3d, 12h, 30m)")


def cmd_jobs(args: argparse.Namespace, client: ServerClient) -> int:
    """Newest first; more than a page is fetched page by page with the server's
    cursor, so no job is listed twice or skipped while others are submitted."""
    jobs, before, total = fetch_jobs(client, args)
    if args.json:
        emit_json(jobs)
    else:
        print(output.job_rows(jobs))
        if before is not None:
            note(f"({len(jobs)} of {total}; --limit N or --before {jobs[-1].id} for more)")
    return 0


def fetch_jobs(client: ServerClient, args: argparse.Namespace
               ) -> tuple[list[Any], int | None, int]:
    """`nai jobs`'s listing: the jobs, the cursor for more (None: no more), the total."""
    jobs: list[Any] = []
    before, total = args.before, 0
    while len(jobs) < args.limit:
        listing = client.jobs(scope="mine" if args.mine else "all", state=args.state,
                              user=args.user, limit=min(PAGE, args.limit - len(jobs)),
                              before=before, since=args.since)
        jobs += listing.jobs
        total = max(total, listing.total)
        before = listing.next_before
        if before is None:
            break
    return jobs, before, total


def cmd_show(args: argparse.Namespace, client: ServerClient) -> int:
    job = client.job(args.id)
    if args.json:
        emit_json(job)
        return 0
    lines = [f"job {job.id}: {job.name}", f"  user:      {job.user}" +
             (f" (group {job.group})" if job.group else ""),
             f"  state:     {job.state}" + (f", waiting: {job.reason}" if job.reason else ""),
             *([f"  why:       {job.why}"] if job.why else []),
             f"  command:   {job.spec.get('command')}",
             f"  gpus:      {output.gpus_cell(job)}",
             f"  submitted: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(job.submitted_at))}",
             f"  runtime:   {output.job_runtime(job)}"]
    if limits := output.job_limits(job):
        lines.append(f"  limits:    {limits}")
    if job.est_start and job.state == "queued":
        lines.append(f"  est. start: {time.strftime('%H:%M:%S', time.localtime(job.est_start))}"
                     f" ({output.starts_in(job.est_start, time.time())})")
    for kind, ref in (("dataset", job.dataset), ("model", job.model)):
        if ref:
            lines.append(f"  {kind + ':':<10} {ref['name']}@{ref['version']}")
    if job.registered:
        lines.append(f"  registered: model {job.registered}")
    if job.exit_code is not None:
        lines.append(f"  exit code: {job.exit_code}")
    if job_note := output.job_note(job):
        lines.append(f"  note:      {job_note}")
    if job.state in ENDED_BADLY and (tail := log_tail(client, job.id)):
        lines.append(f"  last lines of its log (`nai logs {job.id}` for the whole):")
        lines.extend(f"    {line}" for line in tail)
    print("\n".join(lines))
    return 0


ENDED_BADLY = ("failed", "timed_out", "lost")
TAIL_LINES = 3
TAIL_BYTES = 4096


def log_tail(client: ServerClient, job_id: int) -> list[str]:
    """The last few non-blank lines of a job's log, made safe for a terminal (a job's
    output may hold escape sequences; an admin shows anyone's job); none if unreadable."""
    try:
        _, size = client.log_range(job_id, 0, 0)
        data = log_print.read_whole(client, job_id, max(0, size - TAIL_BYTES), TAIL_BYTES)
    except NaiError:
        return []
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    if size > TAIL_BYTES and lines:
        lines = lines[1:]  # the first may be cut
    return ["".join(c if c.isprintable() else "?" for c in line.expandtabs(4))[:300]
            for line in lines[-TAIL_LINES:]]


def cmd_logs(args: argparse.Namespace, client: ServerClient) -> int:
    offset = 0
    if args.tail is not None:
        try:
            offset = log_print.tail_offset(client, args.id, args.tail)
        except NotFound as exc:
            client.job(args.id)  # no such job: says so
            raise NotFound(f"{client.name} cannot read part of a log (an older server): "
                           f"use `nai logs {args.id} | tail -n {args.tail}`") from exc
    if args.follow:
        try:
            follow(client, args.id, offset)
        except KeyboardInterrupt:  # what arrived is out already: each piece is flushed
            note(f"stopped following job {args.id}; it goes on (`nai logs {args.id} -f` "
                 f"to watch again)")
            return 130
        return 0
    if log_print.print_log(client, args.id, offset, fallback=not offset) == 0:
        job = client.job(args.id)
        if job.state in ("queued", "preempted"):
            log_print.waiting_note(job)
    return 0


def cmd_cancel(args: argparse.Namespace, client: ServerClient) -> int:
    """Cancel each job (ids and ranges, each once); one that cannot be is reported and
    the rest go on. A job that already ended is said so, not an error. The status is
    the first failure's (3 for a job that does not exist), else 0."""
    status, cancelled = 0, []
    wanted = list(dict.fromkeys(i for ids in args.ids
                                for i in (ids if isinstance(ids, list) else [ids])))
    for job_id in wanted:
        try:
            job = client.cancel(job_id)
        except Conflict as exc:
            ended = _ended_job(client, job_id)
            if ended is None:
                err(str(exc))
                status = status or exit_status(exc)
            else:
                cancelled.append(ended)
                note(f"job {job_id} already ended ({ended.state})")
            continue
        except NaiError as exc:
            err(str(exc))
            status = status or exit_status(exc)
            continue
        cancelled.append(job)
        if not args.json:
            print(job_id)
        note(f"job {job_id}: " + ("cancelled" if job.state == "cancelled"
                                  else "stopping (SIGTERM sent)"))
    if args.json:
        emit_json(cancelled)
    return status


def _ended_job(client: ServerClient, job_id: int) -> Any:
    """The job if it has ended (a cancel refused as a conflict: most often that), else
    None."""
    try:
        job = client.job(job_id)
    except NaiError:
        return None
    return job if job.state in TERMINAL_STATES else None


def cmd_pull(args: argparse.Namespace, client: ServerClient) -> int:
    job = client.job(args.id)
    if job.state not in TERMINAL_STATES:
        raise Invalid(f"job {args.id} is {job.state}; outputs can be pulled once it ends")
    tree = client.outputs(args.id)
    dest = Path(args.to) if args.to else Path.cwd() / "nai-outputs" / str(args.id)
    result = sync.pull(client, tree, dest, cache=hash_cache(), force=args.force)
    empty = not tree.entries
    # stdout and --json as for any pull (the folder, made, even empty: scripts `ls` it);
    # a job that saved nothing is said on stderr instead of "0 file(s) downloaded",
    # which read as checkpoints lost on the way.
    status = output.report_pull(result, f"job {args.id}", dest,
                                {"job": args.id, "empty": empty} if args.json else None,
                                summary=not empty)
    if empty:
        note(f"job {args.id} saved no outputs ({job.state}), so {dest} is empty: "
             f"{NO_OUTPUTS_HINT}")
    return status


NO_OUTPUTS_HINT = ("a job's outputs are the files it writes under $NAI_OUTPUT_DIR; what it "
                   "leaves in its working folder is not kept (see docs/job-spec.md, "
                   "\"Where it runs\")")


def cmd_metrics(args: argparse.Namespace, client: ServerClient) -> int:
    if args.last < 0:
        raise UsageMistake(f"--last {args.last}: give how many of the last points to show, e.g. 5")
    rows = _metric_rows(client, args.id)
    if args.last:
        rows = rows[-args.last:]
    if args.summary:
        found = metrics_view.summary(rows)
        if args.json:
            emit_json(found)
        elif found:
            heads, lines = metrics_view.summary_rows(found)
            print(table(lines, heads))
        else:
            note(f"job {args.id} has no metrics yet")
        return 0
    if args.json:
        emit_json(rows)
        return 0
    if args.csv:
        sys.stdout.write(metrics_view.to_csv(rows))
        return 0
    if not rows:
        note(f"job {args.id} has no metrics yet (a job writes them to $NAI_METRICS_FILE, "
             f"or the daemon reads them from its log with `metrics:` in nai.yaml)")
        return 0
    start = None
    if not args.iso:
        started = client.job(args.id).started_at
        first = next((r["time"] for r in rows if isinstance(r.get("time"), (int, float))),
                     None)
        start = min(x for x in (started, first) if x is not None) if (started or first) \
            else None
    headers, cells = metrics_view.table_rows(rows, start, args.iso)
    print(table(cells, headers))
    return 0


def _metric_rows(client: ServerClient, job_id: int) -> list[dict[str, Any]]:
    """Every row, page by page (the server bounds each answer)."""
    rows: list[dict[str, Any]] = []
    since, skipped = 0, 0
    while True:
        page = client.metrics(job_id, since)
        rows += page.metrics
        skipped += page.skipped
        if not page.metrics or page.next <= since:
            break
        since = page.next
    if skipped:
        note(f"{skipped} line(s) of job {job_id}'s metrics.jsonl are not JSON objects; "
             f"skipped")
    return rows


def cmd_gpus(args: argparse.Namespace, client: ServerClient) -> int:
    gpus = client.gpus()
    if args.json:
        emit_json(gpus)
        return 0
    print(table([output.gpu_cells(g) for g in gpus.gpus], output.GPU_HEADERS))
    note(f"source: {gpus.source}; CPU slots {gpus.cpu_slots_used}/{gpus.cpu_slots} in use")
    return 0


def cmd_whoami(args: argparse.Namespace, client: ServerClient) -> int:
    me = client.me()
    if args.json:
        emit_json(me)
    else:
        print(f"{me.user} on {client.name} ({me.mode}" + (", admin" if me.admin else "") +
              (f"; groups: {', '.join(me.groups)}" if me.groups else "") + ")")
    return 0


def metrics_flags(p: argparse.ArgumentParser) -> None:
    """`nai metrics`'s options (kept beside the command)."""
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--csv", action="store_true", help="CSV, the time as ISO 8601")
    shape.add_argument("--summary", action="store_true",
                       help="min, max and last of each metric")
    p.add_argument("--last", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="only the last N points (default 1)")
    p.add_argument("--iso", action="store_true",
                   help="times as ISO 8601 UTC instead of time since the job started")
