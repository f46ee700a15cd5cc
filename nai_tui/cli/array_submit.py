"""`nai submit --array SPEC`: one folder, many jobs, one upload and one connection.

Each element is an ordinary job whose env holds `NAI_ARRAY_INDEX` and whose name ends
in `-INDEX`. A submit the server refuses midway (the per-user cap on active jobs, most
often) stops the loop: what was queued stays queued, and the user is told which indices
are in and which are not, so a rerun of the rest is one command away."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from nai_server.protocol import NAME_PATTERN, Invalid, NaiError
from nai_tui.cli import commands
from nai_tui.cli.contract import UsageMistake, exit_status
from nai_tui.cli.output import emit_json, err, note
from nai_tui.remote.client import ServerClient

MAX_ARRAY = 10_000  # jobs one --array may submit: a typo (0-99999) is not a flood
MAX_INDEX = 10**9  # as Slurm's array indices: small numbers, not ids
INDEX_VAR = "NAI_ARRAY_INDEX"
NEEDS_API = "1.2"  # the server accepts NAI_ARRAY_INDEX in a spec's env
NAME_MAX = 64
_PART = re.compile(r"(\d{1,10})(?:-(\d{1,10})(?::(\d{1,10}))?)?")


def array_indices(text: str) -> list[int]:
    """An argparse type: `A-B`, `A-B:STEP`, `A,B,C` or a mix (`0-9,20`) → the indices,
    ascending, each once. Counted before they are listed, so `0-999999999` is refused
    without building a billion-item list."""
    parts = [p.strip() for p in text.split(",")]
    ranges: list[range] = []
    for part in parts:
        match = _PART.fullmatch(part)
        if match is None:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not an index (7), a range (0-9) or a range "
                f"with a step (0-99:10); join several with commas: 0-9,20")
        low, high, step = (int(g) if g is not None else None for g in match.groups())
        assert low is not None
        high = low if high is None else high
        if high < low:
            raise argparse.ArgumentTypeError(
                f"{part!r} goes down; write the lower index first: "
                f"{high}-{low}")
        if step == 0:
            raise argparse.ArgumentTypeError(
                f"{part!r} has step 0; the step is at least 1")
        if high > MAX_INDEX:
            raise argparse.ArgumentTypeError(
                f"{part!r}: indices go up to {MAX_INDEX:,}")
        ranges.append(range(low, high + 1, step or 1))
    if sum(len(r) for r in ranges) > MAX_ARRAY:
        raise argparse.ArgumentTypeError(
            f"{text!r} names {sum(len(r) for r in ranges):,} jobs; one --array "
            f"submits at most {MAX_ARRAY:,}: submit it in parts (0-9999, then 10000-19999)")
    return sorted({i for r in ranges for i in r})


def element_name(base: str, index: int) -> str:
    """`base-INDEX`, `base` cut so the whole stays within a name's 64 characters (names
    take no brackets, so Slurm's `base[7]` is spelled `base-7`)."""
    suffix = f"-{index}"
    return base[:NAME_MAX - len(suffix)] + suffix


def base_name(spec_name: str | None, folder: Path) -> str:
    """The array's name: the spec's (or --name's), else its folder's, made a valid name."""
    if spec_name:
        return spec_name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).lstrip("._-")
    return name if re.fullmatch(NAME_PATTERN, name) else "array"


def _request(request: dict[str, Any], index: int, name: str | None) -> dict[str, Any]:
    """The submit of element `index`: the array's request with its index and name."""
    overrides = dict(request["overrides"])
    env = overrides.get("env") or []
    overrides["env"] = [*env, f"{INDEX_VAR}={index}"]
    if name is not None:
        overrides["name"] = name
    return {**request, "overrides": overrides}


def check_flags(args: argparse.Namespace) -> None:
    """Refuse what --array cannot do, before anything is sent."""
    if args.follow:
        raise UsageMistake("--follow follows one job and --array submits many: leave "
                           "--follow out, then follow one with `nai logs ID -f`")


def check_server(client: ServerClient) -> None:
    if not client.speaks(NEEDS_API):
        raise Invalid(f"{client.name} is too old for --array (its API is older than "
                      f"{NEEDS_API}): upgrade nai-server there, or submit one job at a time")


def dry_run(args: argparse.Namespace, client: ServerClient, spec_file: Path | None) -> int:
    """`--dry-run --array`: the first element checked and planned (the others differ only
    in their index and name)."""
    from nai_tui.cli import multi_server

    check_server(client)
    folder, request = commands.spec_request(Path(args.dir), spec_file,
                                            **commands.submit_overrides(args))
    first, last = args.array[0], args.array[-1]
    probe = client.submit(**_request(request, first, None), dry_run=True)
    base = base_name(probe.spec.get("name"), folder)
    job = client.submit(**_request(request, first, element_name(base, first)), dry_run=True)
    note(f"dry run of the first of {len(args.array)} jobs ({INDEX_VAR}={first}); the others "
         f"differ only in {INDEX_VAR} and name (up to {element_name(base, last)})")
    if args.json:
        emit_json(job)
    else:
        print("\n".join(multi_server.plan_lines(client.name, job)))
    return 0


def submit_array(args: argparse.Namespace, client: ServerClient, folder: Path,
                 spec_file: Path | None, extra: dict[str, Any] | None = None) -> int:
    """Check the first element, upload the code once, then submit every element; print
    each id as it is queued (or the list with --json). On a refusal: stop, and say which
    indices were submitted (as which jobs) and which were not."""
    from nai_tui.sync import push as sync
    from nai_tui.sync.bigfiles import confirm_big_upload

    check_flags(args)
    check_server(client)
    folder, request = commands.spec_request(folder, spec_file,
                                            **commands.submit_overrides(args))
    indices: list[int] = args.array
    # The server checks the spec, names, GPUs and quota before anything is uploaded; the
    # answer also says the spec's name, which each element's name extends.
    probe = client.submit(**_request(request, indices[0], None), dry_run=True)
    base = base_name(probe.spec.get("name"), folder)
    note(f"syncing {folder} to {client.name} ...")
    tree = sync.push(client, folder, cache=commands.hash_cache(),
                     check=confirm_big_upload(args.yes, warn=note))
    jobs: list[Any] = []
    for index in indices:
        try:
            job = client.submit(**_request(request, index, element_name(base, index)),
                                code_tree=tree)
        except NaiError as exc:
            _report_partial(args, client, indices, jobs, index, exc, extra)
            return exit_status(exc)
        jobs.append(job)
        if not args.json:
            print(job.id, flush=True)
    if args.json:
        emit_json([{**j.model_dump(mode="json"), **(extra or {})} for j in jobs])
    note(f"submitted {len(jobs)} jobs to {client.name}: jobs {_span(jobs)}, named "
         f"{element_name(base, indices[0])} to {element_name(base, indices[-1])}")
    return 0


def _span(jobs: list[Any]) -> str:
    """The jobs' ids as `nai cancel` takes them (`12-20 25`: another user's job may
    have come between)."""
    return compact([j.id for j in jobs]).replace(",", " ")


def _report_partial(args: argparse.Namespace, client: ServerClient, indices: list[int],
                    jobs: list[Any], failed: int, exc: NaiError,
                    extra: dict[str, Any] | None) -> None:
    """A refusal midway: the error, what is queued (by index and job id) and what is
    not, with the --array that submits the rest."""
    done = indices[:len(jobs)]
    left = indices[len(jobs):]
    err(f"index {failed}: {exc}")
    if args.json:
        emit_json([{**j.model_dump(mode="json"), **(extra or {})} for j in jobs])
    if jobs:
        note(f"submitted {len(jobs)} of {len(indices)}: indices {compact(done)} as jobs "
             f"{_span(jobs)} (they stay queued; `nai cancel {_span(jobs)}` to take them "
             f"back)")
    else:
        note(f"submitted none of the {len(indices)} jobs")
    note(f"not submitted: indices {compact(left)}; to submit them once the cause is "
         f"fixed: nai submit ... --array {compact(left)}")


def compact(indices: list[int]) -> str:
    """Indices as `--array` takes them: runs of consecutive ones as `A-B`."""
    runs: list[str] = []
    start = prev = indices[0]
    for i in [*indices[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(runs)
