"""What the torture test checks once the daemon has been killed for the last time and
every job has ended (see `torture`): each check returns its failures, in words."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from nai_server.testing import wait_for

if TYPE_CHECKING:
    from nai_server.testing.torture import DaemonProcess, Ledger, Submitted

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "lost"}
# Names the daemon writes under before renaming into place (atomic writes, uploads,
# job directories being built), and the directories it moves aside.
_TEMP = re.compile(r"^\..+\.tmp$|^\.\d+\.new$|\.stale-\d+$")


def check(daemon: DaemonProcess, ledger: Ledger, token: str, runs: Path) -> list[str]:
    """Every check, once every job the daemon holds has ended. `runs` has a line per
    start of a job's command (its name and id)."""
    with daemon.client(timeout=60) as client:
        jobs, failures = _listing(client)
        by_name = {j["name"]: j for j in jobs}
        wait_for(lambda: _all_ended(client, by_name), timeout=300,
                 what="every job of the workload to end")
        jobs, failures = _listing(client)
        by_name = {j["name"]: j for j in jobs}
        failures += _jobs(client, ledger, by_name)
        failures += _ran_once(runs, by_name)
        failures += _models(client, ledger, by_name)
        failures += _datasets(client, ledger)
    failures += _processes(token)
    failures += _temp_files(daemon.state, daemon.started_at)
    failures += _verify(daemon)
    failures += daemon_errors(daemon.root / "daemon.log")
    return failures


def daemon_errors(log: Path) -> list[str]:
    """The daemon logged no error: a kill may cut it off anywhere, but never make it
    fail on what it finds when it starts again (a tick that fails once fails for ever)."""
    lines = log.read_text(errors="replace").splitlines()
    errors = [i for i, line in enumerate(lines) if " ERROR " in line]
    if not errors:
        return []
    first = "\n".join(lines[errors[0]:errors[0] + 40])
    return [f"the daemon logged {len(errors)} errors; the first:\n{first}"]


def _listing(client: httpx.Client) -> tuple[list[dict[str, Any]], list[str]]:
    """Every job, paging through the whole history; a job listed twice is a failure."""
    jobs: list[dict[str, Any]] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if before is not None:
            params["before"] = before
        page = client.get("/v1/jobs", params=params).json()
        jobs += page["jobs"]
        before = page.get("next_before")
        if before is None:
            break
    seen: dict[int, int] = {}
    for job in jobs:
        seen[job["id"]] = seen.get(job["id"], 0) + 1
    twice = sorted(i for i, n in seen.items() if n > 1)
    names: dict[str, int] = {}
    for job in jobs:
        names[job["name"]] = names.get(job["name"], 0) + 1
    doubled = sorted(n for n, c in names.items() if c > 1)
    failures = [f"jobs listed more than once: {twice}"] if twice else []
    if doubled:
        failures.append(f"one submission recorded as several jobs: {doubled}")
    unique = {j["id"]: j for j in jobs}
    return list(unique.values()), failures


def _all_ended(client: httpx.Client, by_name: dict[str, dict[str, Any]]) -> bool:
    return all(client.get(f"/v1/jobs/{j['id']}").json()["state"] in TERMINAL
               for j in by_name.values())


def _jobs(client: httpx.Client, ledger: Ledger, by_name: dict[str, dict[str, Any]]
          ) -> list[str]:
    failures = []
    names = {s.name for s in ledger.submitted}
    strangers = sorted(set(by_name) - names)
    if strangers:
        failures.append(f"jobs nobody submitted: {strangers}")
    for entry in ledger.submitted:
        job = by_name.get(entry.name)
        if job is None:
            if entry.id is not None:
                failures.append(f"job {entry.id} ({entry.name}) confirmed but lost")
            continue
        if entry.id is not None and job["id"] != entry.id:
            failures.append(f"{entry.name}: confirmed as job {entry.id}, listed as {job['id']}")
        failures += _one_job(client, entry, job)
    return failures


def _ran_once(runs: Path, by_name: dict[str, dict[str, Any]]) -> list[str]:
    """No job's command was started twice (a crash must not make the daemon forget that
    it started one), and each ran under the id it is listed with."""
    try:
        lines = runs.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    count: dict[str, int] = {}
    failures = []
    for line in lines:
        name, _, job_id = line.partition(" ")
        count[name] = count.get(name, 0) + 1
        job = by_name.get(name)
        if job is None or str(job["id"]) != job_id:
            failures.append(f"a run of {name} as job {job_id}, listed as "
                            f"{job['id'] if job else 'nothing'}")
    failures += [f"{name} (job {by_name[name]['id'] if name in by_name else '?'}) ran "
                 f"{n} times" for name, n in sorted(count.items()) if n > 1]
    return failures


def _one_job(client: httpx.Client, entry: Submitted, job: dict[str, Any]) -> list[str]:
    plan = entry.plan
    want = "succeeded" if plan.code == 0 else "failed"
    where = f"job {job['id']} ({entry.name})"
    if job["state"] != want or job.get("exit_code") != plan.code:
        return [f"{where}: {job['state']} with exit code {job.get('exit_code')}, not {want} "
                f"with {plan.code} ({job.get('message')})"]
    if not job.get("output_tree"):
        return [f"{where}: no outputs recorded ({job.get('message')})"]
    tree = client.get(f"/v1/jobs/{job['id']}/outputs").json()
    listed = {e["path"]: e for e in tree["entries"]}
    expected = plan.outputs
    if set(listed) != set(expected):
        return [f"{where}: outputs {sorted(listed)}, expected {sorted(expected)}"]
    failures = []
    for path, data in expected.items():
        pulled = client.get(f"/v1/jobs/{job['id']}/outputs/file", params={"path": path})
        if pulled.status_code != 200 or pulled.content != data:
            failures.append(f"{where}: output {path} differs ({pulled.status_code}, "
                            f"{len(pulled.content)} bytes of {len(data)})")
    return failures


def _models(client: httpx.Client, ledger: Ledger, by_name: dict[str, dict[str, Any]]
            ) -> list[str]:
    """A succeeded job with `register_model` made exactly one version, of its outputs."""
    failures = []
    versions: dict[str, dict[int, dict[str, Any]]] = {}
    for name in {s.plan.model for s in ledger.submitted if s.plan.model}:
        answer = client.get(f"/v1/models/{name}")
        versions[name] = ({v["version"]: v for v in answer.json()["versions"]}
                          if answer.status_code == 200 else {})
    made_by: dict[int, int] = {}
    for found in versions.values():
        for v in found.values():
            match = re.match(r"outputs of job (\d+) ", v["description"])
            if match:
                made_by[int(match.group(1))] = made_by.get(int(match.group(1)), 0) + 1
    failures += [f"job {j} registered {n} model versions" for j, n in made_by.items() if n > 1]
    for entry in ledger.submitted:
        job = by_name.get(entry.name)
        if job is None or not entry.plan.model or job["state"] != "succeeded":
            continue
        name, _, number = (job.get("registered") or "@").partition("@")
        version = versions.get(name, {}).get(int(number)) if number.isdigit() else None
        if version is None or version["tree_id"] != job.get("output_tree"):
            failures.append(f"job {job['id']}: registered {job.get('registered')!r} "
                            f"({job.get('message')}), not a version of its outputs")
    return failures


def _datasets(client: httpx.Client, ledger: Ledger) -> list[str]:
    """Every confirmed push is there, with its tree; every version was pushed."""
    if not ledger.pushes and not ledger.unconfirmed_pushes:
        return []
    entry = client.get("/v1/datasets/tds")
    if entry.status_code != 200:
        return [f"dataset tds: {entry.status_code} {entry.text[:200]}"] if ledger.pushes else []
    found = {v["version"]: v["tree_id"] for v in entry.json()["versions"]}
    failures = [f"dataset tds@{v}: {found.get(v)}, pushed {tree}"
                for v, tree in ledger.pushes.items() if found.get(v) != tree]
    pushed = set(ledger.pushes.values()) | set(ledger.unconfirmed_pushes)
    failures += [f"dataset tds@{v} holds a tree never pushed" for v, t in found.items()
                 if t not in pushed]
    return failures


def workload_processes(token: str) -> dict[int, str]:
    """The live processes of the workload's jobs (pid → what it is), found by the
    token in their environment."""
    needle = f"TORTURE_RUN={token}".encode()
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if needle not in env:
                continue
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        job = next((e[11:].decode() for e in env if e.startswith(b"NAI_JOB_ID=")), "?")
        found[int(pid)] = f"pid {pid} of job {job}: {cmd.decode(errors='replace').strip()}"
    return found


def _processes(token: str) -> list[str]:
    """No process of the workload's jobs is alive (every job has ended)."""
    deadline = time.monotonic() + 10  # the last job's end is being carried out
    while (left := workload_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [f"processes of ended jobs alive: {sorted(left.values())}"] if left else []


def _temp_files(state: Path, since: float) -> list[str]:
    """No temp file (or moved-aside directory) older than the daemon's last start."""
    left = []
    for dirpath, dirnames, filenames in os.walk(state):
        folder = Path(dirpath)
        in_tmp = folder.name == "tmp" and folder.parent.name == "blobs"
        for name in (*dirnames, *filenames):
            path = folder / name
            if not (in_tmp or _TEMP.search(name)):
                continue
            try:
                if os.lstat(path).st_mtime < since:
                    left.append(str(path.relative_to(state)))
            except FileNotFoundError:
                continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".") or not d.endswith(".new")]
    return [f"left from before the last start: {sorted(left)}"] if left else []


def _verify(daemon: DaemonProcess) -> list[str]:
    from nai_server.testing.torture import BIN

    done = subprocess.run([str(BIN / "nai-admin"), "--socket", str(daemon.socket), "store",
                           "verify", "--json"], capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = {}
    if done.returncode != 0 or not report.get("clean"):
        return [f"store verify: exit {done.returncode}: {done.stdout[-2000:]} {done.stderr}"]
    return []
