"""`nai-server check`: is this server set up right? Prints what it found; the exit
code is 0 only when the config is valid, the state is readable, GPUs were found
and a daemon answers on the socket."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from nai_server.config import ServerConfig
from nai_server.host import cgroup_limits, contain, diskspace, unix
from nai_server.host.gpus import open_inventory
from nai_server.paths import default_paths
from nai_server.store.atomic import StateUnreadable, read_json_file
from nai_server.store.journal import read_state


def _state_problem(state: Path) -> str | None:
    for path in [state / "state.json", *sorted((state / "archive").glob("jobs-*.json"))]:
        if path.exists():
            try:
                read_state(path) if path.name == "state.json" else read_json_file(path)
            except StateUnreadable as exc:
                return str(exc)
    return None


def _daemon_get(sock: Path, path: str = "/v1/version") -> dict[str, Any] | None:
    """What a daemon answering on `sock` says at `path` (None: no answer)."""
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=2.0) as client:
            response = client.get(f"http://nai{path}")
            response.raise_for_status()
            return response.json()  # type: ignore[no-any-return]
    except (httpx.HTTPError, OSError, ValueError):
        return None


def _daemon_checks(config: ServerConfig, report: dict[str, Any], no_gpus: str | None,
                   problems: list[str]) -> dict[str, Any] | None:
    """Whether a daemon answers; the GPUs it has where this check found none (it may run
    with --fake-gpus); a personal server of this user's when the server checked is not."""
    version = _daemon_get(config.socket_path)
    report["daemon"] = version
    served = _daemon_get(config.socket_path, "/v1/gpus") if version and no_gpus else None
    if served and served.get("gpus"):
        report["gpu_source"] = served.get("source", "daemon")
        report["gpus"] = [{"index": g["index"], "name": g["name"], "uuid": g.get("uuid", ""),
                           "memory_total": g["memory_total"], "memory_used": g["memory_used"]}
                          for g in served["gpus"]]
        report["gpu_note"] = ("the running daemon's; this check's config has none (the "
                              "daemon was started with --fake-gpus or another config)")
    elif no_gpus:
        problems.append(no_gpus)
    if version is not None:
        return version
    mention = ""
    personal = default_paths("personal")[1]
    if not config.personal and personal != config.socket_path:
        other = _daemon_get(personal)
        if other is not None:
            report["personal_daemon"] = {"socket": str(personal), **other}
            mention = (f"; a personal server of yours answers on {personal}: "
                       f"`nai-server check --personal` checks that one")
    problems.append(f"no daemon answers on {config.socket_path} (start `nai-server run`)"
                    + mention)
    return None


def run_check(config: ServerConfig, *, as_json: bool = False) -> int:
    report: dict[str, Any] = {
        "mode": config.mode,
        "state_dir": str(config.state),
        "socket": str(config.socket_path),
        "user": os.getuid(),
    }
    problems: list[str] = []
    warnings: list[str] = []
    layout = contain.detect()
    report["cgroups"] = {"layout": layout.kind, "root": str(layout.root) if layout.root else None,
                         "per_job": layout.root is not None and os.geteuid() == 0}
    if layout.root is None:
        warnings.append("no cgroup2 hierarchy: a job's processes that leave its session "
                        "are not killed when it ends")
    limits = (cgroup_limits.survey(layout.kind, layout.root)
              if report["cgroups"]["per_job"] else {})
    report["cgroups"]["limits"] = limits
    if unenforced := [name for name in cgroup_limits.CONTROLLERS if name not in limits]:
        warnings.append(f"{' and '.join(unenforced)} limits of jobs (`memory:`/`cpus:` in "
                        f"nai.yaml) are not enforced here: no cgroup with the "
                        f"{'/'.join(unenforced)} controller (needs root and cgroup v2)")
    free = diskspace.free_bytes(config.state)
    report["free_space"] = free
    if (full := diskspace.below_floor(config)) is not None:
        warnings.append(full)
    if not config.personal and os.geteuid() == 0 and config.state.is_dir() and \
            not unix.acls_work(config.state):
        warnings.append(f"the file system of {config.state} has no POSIX ACLs: jobs' folders "
                        f"are 0711, and another user who knows a job's id can read its "
                        f"dataset and code (mount it with ACLs: ext4 and xfs have them)")
    state_problem = _state_problem(config.state)
    if state_problem:
        problems.append(state_problem)
    no_gpus: str | None = None
    try:
        inventory, note = open_inventory(config.gpus)
        snapshot = inventory.probe()
        report["gpu_source"] = snapshot.source
        report["gpus"] = [
            {"index": g.index, "name": g.name, "uuid": g.uuid, "memory_total": g.memory_total,
             "memory_used": g.memory_used}
            for g in snapshot.gpus
        ]
        if note:
            report["gpu_note"] = note
        if not snapshot.gpus and config.launcher != "slurm":  # under Slurm: Slurm's GPUs
            no_gpus = ("no GPUs: no NVIDIA driver found and no fake GPUs configured "
                       "(gpus.fake in the config, or --fake-gpus N); CPU-only jobs still run")
    except Exception as exc:
        report["gpu_source"] = "error"
        problems.append(str(exc))
    if config.launcher == "slurm":
        from nai_server.host.launchers.slurm_check import check_slurm, describe

        report["slurm"], slurm_problems, slurm_warnings = check_slurm(config)
        problems += slurm_problems
        warnings += slurm_warnings
    version = _daemon_checks(config, report, no_gpus, problems)
    report["ok"] = not problems
    report["problems"] = problems
    report["warnings"] = warnings
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(f"mode:       {report['mode']}")
        print(f"state dir:  {report['state_dir']}")
        print(f"socket:     {report['socket']}")
        note_text = f" ({report['gpu_note']})" if report.get("gpu_note") else ""
        print(f"gpu source: {report['gpu_source']}{note_text}")
        for gpu in report.get("gpus", []):
            print(f"  gpu {gpu['index']}: {gpu['name']} {gpu['memory_total'] / 2**30:.1f} GiB "
                  f"({gpu['uuid']})")
        per_job = "a cgroup per job" if report["cgroups"]["per_job"] else (
            "no cgroup per job (needs root and cgroup2)")
        enforced = ", ".join(f"{name} ({where})" for name, where in limits.items())
        print(f"cgroups:    {layout.describe()}; {per_job}; limits: {enforced or 'none'}")
        if free is not None:
            print(f"free space: {free / 2**30:.1f} GiB in the state dir")
        if "slurm" in report:
            print(f"slurm:      {describe(report['slurm'])}")
        print("daemon:     " + (f"answering (api {version['api_version']}, server "
                                f"{version['server_version']})" if version else "not answering"))
        for warning in warnings:
            print(f"warning: {warning}")
        for problem in problems:
            print(f"problem: {problem}")
        print("all is well" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1
