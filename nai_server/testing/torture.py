"""The torture test's engine (issue 14): SIGKILL the real daemon again and again while a
workload of jobs with outputs runs through it, then check that nothing was lost,
doubled, corrupted or leaked.

A client thread uploads each job's code, records its tree, submits it, and now and
then pushes a dataset version; each job writes deterministic outputs, leaves a
background child and a `setsid` grandchild behind, and exits with a code chosen here;
some register their outputs as a model. Meanwhile the killer picks, each round, a
moment to aim at (an upload, a submit, a dataset push, a job directory being copied,
outputs being collected, a job's end, an archive move, or just a random delay),
waits for its sign (or a deadline) and kills the daemon with SIGKILL, then starts it
again. At the end every confirmed job must be there exactly once with its true end,
every output byte-identical, no job process alive, no temp file left from before the
last start, and `nai-admin store verify` clean.

Everything random comes from one seeded RNG (the client's own) and one for the
killer: a failure prints the seed, and `bench/torture.py --seed N` replays its plan
(the timing of a real daemon never replays exactly).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from nai_server.host.runtime import ARCHIVE_EVERY_SECONDS
from nai_server.testing import pack, wait_for

BIN = Path(sys.executable).parent
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "lost"}
AIMS = ("delay", "upload", "submit", "push", "copy", "collect", "end", "archive")
CODES = (0, 0, 0, 0, 1, 3, 42)
DOWN = (httpx.TransportError, ConnectionError)


@dataclass(frozen=True)
class JobPlan:
    """One job of the workload: its code, its exit code, the outputs it must leave."""

    index: int
    files: dict[str, bytes]
    code: int
    gpus: int
    model: str | None

    @property
    def outputs(self) -> dict[str, bytes]:
        data = b"".join(self.files[p] for p in sorted(self.files) if p.startswith("data/"))
        return {"all.bin": data, "sub/id.txt": f"job {self.index} exit {self.code}\n".encode()}


def plan_jobs(rng: random.Random, count: int) -> list[JobPlan]:
    """The workload: mostly small jobs, some with many files or a few megabytes (so
    that copies and collections take long enough to be hit)."""
    jobs = []
    for i in range(count):
        shape = rng.random()
        parts, size = (40, 16 << 10) if shape < 0.2 else (2, 1 << 20) if shape < 0.3 else (
            rng.randint(1, 4), rng.randint(1, 8 << 10))
        files = {f"data/part-{k:03d}.bin": rng.randbytes(size) for k in range(parts)}
        code = rng.choice(CODES)
        files["run.sh"] = (
            "echo \"$TORTURE_NAME $NAI_JOB_ID\" >> \"$TORTURE_RUNS\"\n"  # each run, once
            "cat data/*.bin > \"$NAI_OUTPUT_DIR/all.bin\"\n"
            "mkdir -p \"$NAI_OUTPUT_DIR/sub\"\n"
            f"printf 'job {i} exit {code}\\n' > \"$NAI_OUTPUT_DIR/sub/id.txt\"\n"
            "sleep 600 &\n"  # what a job leaves behind must end with it
            "setsid sleep 600 &\n"
            f"sleep {rng.choice((0, 0, 0.05, 0.2, 0.5))}\n"
            f"exit {code}\n").encode()
        model = f"tm{i % 3}" if rng.random() < 0.2 else None
        jobs.append(JobPlan(i, files, code, rng.choice((0, 1)), model))
    return jobs


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DaemonProcess:
    """`nai-server run` on its own state dir and socket, started and SIGKILLed."""

    def __init__(self, root: Path, **config: Any) -> None:
        self.root = root
        self.state = root / "state"
        self.socket = root / "run" / "nai.sock"
        self.config_path = root / "config.yaml"
        cfg = {"mode": "multi-user", "state_dir": str(self.state), "socket": str(self.socket),
               "gpus": {"source": "fake", "fake": [{"name": "Fake GPU", "memory": "80GiB"}] * 2},
               "scheduler": {"tick_seconds": 0.1},
               "jobs": {"archive_after_hours": 0, "cancel_grace_seconds": 1}, **config}
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def launch(self) -> None:
        """Start it, without waiting for it to answer."""
        env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        self.started_at = time.time()
        with open(self.root / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "nai-server"), "run", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def start(self) -> None:
        self.launch()
        wait_for(lambda: self.proc is not None and (self.proc.poll() is not None or answers(
            self.socket)), timeout=60, what=f"the daemon on {self.socket}")
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited {self.proc.returncode} at start:\n"
                                 f"{self.log()[-4000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return (self.root / "daemon.log").read_text(errors="replace")

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)),
                            base_url="http://nai", timeout=timeout)


def answers(socket: Path) -> bool:
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)),
                          base_url="http://nai", timeout=5) as client:
            return client.get("/v1/version").status_code == 200
    except DOWN:
        return False


@dataclass
class Submitted:
    plan: JobPlan
    name: str
    id: int | None = None  # None: the daemon died before it confirmed the submission


@dataclass
class Ledger:
    """What the client did, and what the daemon confirmed."""

    submitted: list[Submitted] = field(default_factory=list)
    pushes: dict[int, str] = field(default_factory=dict)  # confirmed version → tree
    unconfirmed_pushes: list[str] = field(default_factory=list)
    retries: int = 0


class Client(threading.Thread):
    """Uploads, submits and pushes the workload, waiting out the daemon's deaths; it
    submits no further than `allowed` so that the work is spread over the rounds."""

    def __init__(self, daemon: DaemonProcess, jobs: list[JobPlan], token: str) -> None:
        super().__init__(daemon=True, name="torture-client")
        self.d, self.jobs, self.token = daemon, jobs, token
        self.ledger = Ledger()
        self.allowed = 0
        self.waiting_at: int | None = None  # the job it waits to be allowed to submit
        self.cond = threading.Condition()
        self.about = {aim: threading.Event() for aim in ("upload", "submit", "push")}
        self.error: BaseException | None = None

    def allow(self, count: int) -> None:
        with self.cond:
            self.allowed = max(self.allowed, count)
            self.cond.notify_all()

    def run(self) -> None:
        try:
            for plan in self.jobs:
                with self.cond:
                    self.waiting_at = plan.index
                    self.cond.notify_all()
                    self.cond.wait_for(lambda p=plan: p.index < self.allowed)  # type: ignore[misc]
                    self.waiting_at = None
                tree = self._retry(self._upload(plan.files))
                self._submit(plan, tree)
                if plan.index % 7 == 3:
                    self._push(tree)
        except BaseException as exc:  # reported by the engine
            self.error = exc

    def _retry(self, step: Any) -> Any:
        """Idempotent steps are retried until the daemon (restarted) answers them."""
        while True:
            try:
                with self.d.client() as client:
                    return step(client)
            except DOWN:
                self.ledger.retries += 1
                wait_for(lambda: answers(self.d.socket), timeout=120, what="the daemon back")

    def _upload(self, files: dict[str, bytes]) -> Any:
        def step(client: httpx.Client) -> str:
            blobs = {sha(d): d for d in files.values()}
            missing = _ok(client.post("/v1/blobs/missing", json={"digests": list(blobs)}))
            if missing["missing"]:
                self.about["upload"].set()
                _ok(client.post("/v1/blobs", content=pack(
                    {h: blobs[h] for h in missing["missing"]})))
            entries = [{"path": p, "size": len(d), "mode": 0o644, "sha256": sha(d)}
                       for p, d in files.items()]
            return str(_ok(client.post("/v1/trees", json={"entries": entries}))["id"])
        return step

    def _submit(self, plan: JobPlan, tree: str) -> None:
        """One try per submission: one that the daemon did not confirm is not sent
        again under the same name (whether it was recorded is for the checks)."""
        while True:
            entry = Submitted(plan, f"t{plan.index}-{len(self.ledger.submitted)}")
            self.ledger.submitted.append(entry)
            spec: dict[str, Any] = {"command": "sh run.sh", "gpus": plan.gpus,
                                    "name": entry.name, "env": {
                                        "TORTURE_RUN": self.token, "TORTURE_NAME": entry.name,
                                        "TORTURE_RUNS": str(self.d.root / "runs.txt")}}
            if plan.model:
                spec["register_model"] = plan.model
            try:
                with self.d.client() as client:
                    self.about["submit"].set()
                    entry.id = int(_ok(client.post("/v1/jobs", json={
                        "spec": spec, "code_tree": tree}))["id"])
                    return
            except DOWN:
                self.ledger.retries += 1
                wait_for(lambda: answers(self.d.socket), timeout=120, what="the daemon back")

    def _push(self, tree: str) -> None:
        try:
            with self.d.client() as client:
                self.about["push"].set()
                made = None
                if not self.ledger.pushes:  # the first (a cut first try may have made it)
                    made = client.post("/v1/datasets", json={"name": "tds", "tree_id": tree})
                if made is None or made.status_code == 409:
                    made = client.post("/v1/datasets/tds/versions", json={"tree_id": tree})
                body = _ok(made)
                self.ledger.pushes[int(body.get("version") or body["latest"])] = tree
        except DOWN:
            self.ledger.unconfirmed_pushes.append(tree)


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 500:  # e.g. a commit that failed as the daemon died
        raise ConnectionError(f"{response.status_code}: {response.text[:300]}")
    if response.status_code >= 300:
        raise AssertionError(f"{response.request.method} {response.request.url.path}: "
                             f"{response.status_code} {response.text[:500]}")
    return response.json()


@dataclass
class Report:
    """What a torture run did and found."""

    seed: int
    jobs: int
    kills: Counter[str] = field(default_factory=Counter)  # aim → kills that hit it
    missed: Counter[str] = field(default_factory=Counter)  # aim → killed at the deadline
    failures: list[str] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)
    seconds: float = 0.0

    def summary(self) -> str:
        hits = ", ".join(f"{a} {self.kills[a]}" + (f" (+{self.missed[a]} at the deadline)"
                                                   if self.missed[a] else "") for a in AIMS)
        confirmed = sum(1 for s in self.ledger.submitted if s.id is not None)
        return (f"seed {self.seed}: {sum(self.kills.values()) + sum(self.missed.values())} "
                f"kills ({hits}); {confirmed} jobs confirmed of "
                f"{len(self.ledger.submitted)} submitted for {self.jobs} planned; "
                f"{len(self.ledger.pushes)} dataset pushes confirmed, "
                f"{len(self.ledger.unconfirmed_pushes)} cut; {self.ledger.retries} client "
                f"retries; {len(self.failures)} failures; {self.seconds:.0f} s")


def run(root: Path, *, jobs: int, kills: int, seed: int | None = None,
        say: Any = None) -> Report:
    """Plan `jobs` jobs, run them through a daemon killed `kills` times, check."""
    from nai_server.testing import torture_checks
    from nai_server.testing.torture_aims import Signs, all_ended, wait_for_aim

    seed = secrets.randbelow(2**32) if seed is None else seed
    say = say or (lambda _line: None)
    say(f"torture: seed {seed} ({jobs} jobs, {kills} kills) in {root}")
    began = time.monotonic()
    rng = random.Random(seed)
    plans = plan_jobs(random.Random(rng.random()), jobs)
    daemon = DaemonProcess(root)
    client = Client(daemon, plans, token=f"torture-{seed}-{secrets.token_hex(4)}")
    report = Report(seed, jobs, ledger=client.ledger)
    signs = Signs(daemon)
    client.start()
    try:
        for round_no in range(kills):
            client.allow(-(-jobs * (round_no + 1) // (kills + 1)))
            aim = rng.choice(AIMS)
            if aim == "archive" and not signs.archivable(daemon.state / "state.json"):
                aim = rng.choice(AIMS[:-1])  # no ended job to move: it cannot be hit
            signs.baseline()
            if aim == "archive":  # the first tick after a start moves the ended jobs
                daemon.launch()
            else:
                daemon.start()
            for event in client.about.values():
                event.clear()
            hit = wait_for_aim(aim, rng, client, signs)
            daemon.kill()
            (report.kills if hit else report.missed)[aim] += 1
            say(f"round {round_no + 1}/{kills}: killed at {aim}{'' if hit else ' (deadline)'} "
                f"({time.monotonic() - began:.1f} s)")
            if client.error is not None:
                raise client.error
        # The last job comes after the whole history was archived and the daemon
        # restarted with no job in its hot table: its id must still be a new one.
        client.allow(jobs - 1)
        daemon.start()
        wait_for(lambda: client.waiting_at == jobs - 1 or not client.is_alive(), timeout=300,
                 what="the client to submit all but the last job")
        with daemon.client() as api:
            wait_for(lambda: all_ended(api), timeout=300, what="every job to end")
        daemon.kill()
        # Its first tick archives every job, but for a job whose end the kill took back:
        # collected again, it ends after that tick's archive pass and is archived at the
        # next one, ARCHIVE_EVERY_SECONDS later (it came at 60 s, this wait's old bound).
        daemon.start()
        wait_for(lambda: not Signs.hot_jobs(daemon.state / "state.json"),
                 timeout=2 * ARCHIVE_EVERY_SECONDS + 60, what="every job archived")
        daemon.kill()
        daemon.start()
        client.allow(jobs)
        wait_for(lambda: not client.is_alive(), timeout=300, what="the client to finish")
        if client.error is not None:
            raise client.error
        report.failures += torture_checks.check(daemon, client.ledger, client.token,
                                                daemon.root / "runs.txt")
    except AssertionError as exc:  # a wait that timed out: say why, if the daemon knows
        report.failures += [str(exc), *torture_checks.daemon_errors(daemon.root / "daemon.log")]
    finally:
        daemon.stop()
        for pid in torture_checks.workload_processes(client.token):  # an aborted run's
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        report.seconds = time.monotonic() - began
    return report
