"""Serving through nai: the daemon's proxy against the replica's own socket.

Starts a personal daemon, registers two small models and serves them, then prints,
all from this one run:

1. p50/p99 latency of POST /predict on a tiny model, one request at a time, through
   the daemon (`/v1/services/NAME/invoke/predict`) vs straight to the replica's unix
   socket (target: overhead <= 1 ms at p50), and the daemon's CPU per request;
2. throughput with 32 concurrent clients, proxy vs direct (target >= 0.7x);
3. dynamic batching: a model whose predict_batch costs the same for 1 or 16 inputs,
   served with max_batch 16 vs without batching, 32 clients (target >= 5x);
4. `nai service forward` on the local socket and over a loopback sshd (paramiko and
   the system ssh; as root) vs the proxy on the daemon's socket: p50 ratios;
5. cold start: from `POST /v1/services` to the first answer, vs the model's own load.

    PYTHONPATH=$PWD .venv/bin/python bench/serve.py [--requests N] [--seconds S]

With `--against CHECKOUT` (another tree of nai, e.g. `git worktree add --detach
/tmp/old REV`), sections 1-3 run on a daemon of each, in turns, and the medians are
shown side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from nai_server.testing import upload_tree
from nai_server.testing.loopback_sshd import make_sshd
from nai_tui.remote.client import ServerClient, local_http_client
from nai_tui.remote.forward import ServiceForwarder
from nai_tui.remote.transports import http_client_for

BIN = Path(sys.executable).parent
BODY = json.dumps({"inputs": [[0.1, 0.2, 0.3, 0.4]]}).encode()
HEADERS = {"content-type": "application/json"}
TINY = b"""
def load(model_dir):
    pass

def predict(inputs):
    return inputs

def predict_batch(batch):
    return batch
"""
# One forward pass of a batched model on a GPU costs about the same for 1 or 16 rows.
SLOW = b"""
import time

def load(model_dir):
    time.sleep(0.3)

def predict(inputs):
    time.sleep(0.02)
    return inputs

def predict_batch(batch):
    time.sleep(0.02)
    return batch
"""


@contextmanager
def daemon(root: Path, code: str | None = None) -> Iterator[tuple[Path, dict[str, str]]]:
    """A personal daemon whose socket is where `nai` looks for one (XDG_RUNTIME_DIR);
    `code`: a checkout of nai to run it from instead (its PYTHONPATH)."""
    env = {**os.environ, **({"PYTHONPATH": code} if code else {}),
           "XDG_RUNTIME_DIR": str(root / "run"),
           "XDG_CONFIG_HOME": str(root / "config"), "XDG_CACHE_HOME": str(root / "cache"),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    sock = root / "run" / "nai" / "nai.sock"
    sock.parent.mkdir(parents=True)
    with open(root / "daemon.log", "wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "nai-server"), "run", "--personal", "--state-dir", str(root / "state"),
             "--socket", str(sock), "--fake-gpus", "2"], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        until(lambda: sock.exists(), 30, "the daemon's socket")
        yield sock, env
    finally:
        proc.terminate()
        proc.wait(30)


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_pid(sock: Path) -> int:
    """The pid of the daemon listening on `sock` (the peer of a connection to it)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        raw = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", raw)[0])


def until(check: Callable[[], object], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {limit:.0f}s")
        time.sleep(0.01)


def uds_client(sock: Path, base: str = "http://nai") -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url=base,
                        timeout=60)


def register(api: httpx.Client, name: str, predict: bytes) -> None:
    tree = upload_tree(api, {"predict.py": predict})
    made = api.post("/v1/models", json={"name": name, "tree_id": tree})
    assert made.status_code == 201, made.text


def serve(api: httpx.Client, name: str, model: str, **options: object) -> None:
    made = api.post("/v1/services", json={"name": name, "model": model, "gpus": 0, **options})
    assert made.status_code == 201, made.text


def wait_ready(api: httpx.Client, name: str) -> None:
    def ready() -> bool:
        state = api.get(f"/v1/services/{name}").json()["state"]
        if state in ("failed", "stopped"):
            raise RuntimeError(f"service {name} {state}: "
                               f"{api.get(f'/v1/services/{name}').json()['message']}")
        return bool(state == "ready")
    until(ready, 120, f"ready replica of {name}")


def replica_sockets(state: Path) -> dict[str, Path]:
    """Each service's replica socket, found by asking the replicas who they are."""
    found = {}
    for sock in state.glob("services/*/run/serve.sock"):
        with uds_client(sock, "http://replica") as c:
            found[c.get("/metadata").json()["service"]] = sock
    return found


def pct(samples: list[float], q: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(q * len(samples)))] * 1e3


# Load comes from raw HTTP/1.1 on asyncio streams: httpx's own cost per request (a
# millisecond or more of CPU) would make the client, not the server, the bottleneck.
Where = tuple[Path | None, int | None]  # a unix socket, or a TCP port on 127.0.0.1


def request_bytes(path: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: nai\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY


async def _connect(where: Where) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock, port = where
    if sock is not None:
        return await asyncio.open_unix_connection(str(sock))
    return await asyncio.open_connection("127.0.0.1", port)


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length or chunked); its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in
              (line.partition(b":") for line in lines[1:] if line)}
    if b"content-length" in fields:
        await reader.readexactly(int(fields[b"content-length"]))
    elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _client(where: Where, request: bytes, stop: float, count: int,
                  samples: list[float]) -> None:
    reader, writer = await _connect(where)
    try:
        while time.monotonic() < stop and len(samples) < count:
            start = time.perf_counter()
            writer.write(request)
            status = await _answer(reader)
            samples.append(time.perf_counter() - start)
            assert status == 200, status
    finally:
        writer.close()


def measure(where: Where, path: str, *, clients: int = 1, seconds: float = 3600,
            count: int = 1 << 60, warm: bool = True) -> list[float]:
    """Each request's latency, from `clients` connections sending one after the other
    until `seconds` passed or `count` answers came; a short warm-up first."""
    request = request_bytes(path)

    async def go(seconds: float, count: int) -> list[float]:
        samples: list[float] = []
        stop = time.monotonic() + seconds
        await asyncio.gather(*(_client(where, request, stop, count, samples)
                               for _ in range(clients)))
        return samples

    if warm:
        asyncio.run(go(min(1.0, seconds), min(100, count)))
    return asyncio.run(go(seconds, count))


def daemon_cpu(sock: Path, path: str, count: int) -> float:
    """The daemon's CPU (ms, all its threads) per request, one request at a time: on a
    machine busy with other work this moves far less than the latencies do."""
    pid = daemon_pid(sock)
    before = cpu_seconds(pid)
    done = measure((sock, None), path, count=count, warm=False)
    return (cpu_seconds(pid) - before) / len(done) * 1e3


def throughput(where: Where, path: str, clients: int, seconds: float) -> float:
    return len(measure(where, path, clients=clients, seconds=seconds)) / seconds


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def cold_start(api: httpx.Client) -> tuple[float, float]:
    """Seconds from creating a service to its first answer, and its model's load time."""
    start = time.monotonic()
    serve(api, "cold", "slow@1")
    while True:
        answer = api.post("/v1/services/cold/invoke/predict", content=BODY, headers=HEADERS)
        if answer.status_code == 200:
            break
        time.sleep(0.01)
    first = time.monotonic() - start
    loaded = api.get("/v1/services/cold/invoke/metadata").json()["load_seconds"]
    api.delete("/v1/services/cold")
    return first, float(loaded)


@dataclass
class Root:
    name: str = "root"
    uid: int = 0


def forwarded(client: ServerClient, name: str, count: int) -> list[float]:
    """Latencies through a `ServiceForwarder` (what `nai service forward` runs) on
    `client`'s transport."""
    forwarder = ServiceForwarder(client, name, 0)
    threading.Thread(target=forwarder.serve_forever, args=(0.1,), daemon=True).start()
    try:
        return measure((None, forwarder.port), "/predict", count=count)
    finally:
        forwarder.shutdown()
        forwarder.server_close()


def over_ssh(root: Path, sock: Path, name: str, count: int) -> dict[str, list[float]]:
    """The forward's latencies over a loopback sshd, logged in as root, per transport."""
    sshd = make_sshd(root / "sshd", f"{BIN}:/usr/local/bin:/usr/bin:/bin")
    try:
        key = sshd.authorize(Root())
        known = sshd.write_known_hosts(root / "known_hosts")
        found = {}
        for transport in ("ssh", "openssh"):
            http = http_client_for(
                f"ssh://root@127.0.0.1:{sshd.port}", transport=transport, known_hosts=known,
                identity_file=key, remote_command=f"nai-server dial-stdio --socket {sock}",
                ssh_options=["-i", str(key), "-o", f"UserKnownHostsFile={known}"],
                runtime_dir=root / "ssh-run")
            with ServerClient(http, name="bench") as client:
                found[transport] = forwarded(client, name, count)
        return found
    finally:
        sshd.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--against", metavar="CHECKOUT",
                        help="compare the proxy with another checkout's (1-3 only)")
    parser.add_argument("--rounds", type=int, default=2, help="with --against")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nai-bs-", dir="/tmp"))  # short socket paths
    if args.against:
        try:
            against(root, args)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    try:
        with daemon(root) as (sock, env), uds_client(sock) as api:
            try:
                run(api, sock, root, env, args)
            finally:  # replicas outlive their daemon (it adopts them when it restarts)
                stop_all(api, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def against(root: Path, args: argparse.Namespace) -> None:
    """Sections 1-3 on this checkout's daemon and another's, in turns, medians shown."""
    sides = {"this": None, "other": args.against}
    with contextlib.ExitStack() as stack:
        setups = {}
        for side, code in sides.items():
            sock, _env = stack.enter_context(daemon(root / side, code))
            api = stack.enter_context(uds_client(sock))
            stack.callback(stop_all, api, root / side)
            register(api, "tiny", TINY)
            register(api, "slow", SLOW)
            serve(api, "tiny", "tiny@1")
            serve(api, "slow1", "slow@1")
            serve(api, "slow16", "slow@1", max_batch=16, max_wait_ms=5)
            for name in ("tiny", "slow1", "slow16"):
                wait_ready(api, name)
            setups[side] = (sock, replica_sockets(root / side / "state")["tiny"])
        results: dict[str, dict[str, list[float]]] = {side: {} for side in sides}
        for _ in range(args.rounds):
            for side, (sock, direct) in setups.items():
                for key, value in one_round(sock, direct, args).items():
                    results[side].setdefault(key, []).append(value)
    print(f"this checkout vs {args.against}: medians of {args.rounds} rounds "
          f"(each side's direct numbers from its own replica, in the same round)")
    for key in results["this"]:
        this, other = (statistics.median(results[s][key]) for s in sides)
        print(f"   {key:34} this {this:9.2f}  other {other:9.2f}  this/other "
              f"{this / other if other else float('nan'):.2f}")


def one_round(sock: Path, direct: Path, args: argparse.Namespace) -> dict[str, float]:
    invoke = "/v1/services/tiny/invoke/predict"
    on_replica = measure((direct, None), "/predict", count=args.requests)
    via_proxy = measure((sock, None), invoke, count=args.requests)
    cpu = daemon_cpu(sock, invoke, args.requests)
    rate_direct = throughput((direct, None), "/predict", args.clients, args.seconds)
    rate_proxy = throughput((sock, None), invoke, args.clients, args.seconds)
    unbatched = throughput((sock, None), "/v1/services/slow1/invoke/predict",
                           args.clients, args.seconds)
    batched = throughput((sock, None), "/v1/services/slow16/invoke/predict",
                         args.clients, args.seconds)
    return {"direct p50 ms": pct(on_replica, .5), "proxy p50 ms": pct(via_proxy, .5),
            "proxy p99 ms": pct(via_proxy, .99),
            "overhead p50 ms": pct(via_proxy, .5) - pct(on_replica, .5),
            "daemon CPU per request ms": cpu,
            f"throughput {args.clients} clients, proxy/direct": rate_proxy / rate_direct,
            "batching speedup via proxy": batched / unbatched}


def stop_all(api: httpx.Client, state: Path) -> None:
    """Stop every service (replicas outlive their daemon: it adopts them)."""
    for service in api.get("/v1/services").json()["services"]:
        api.delete(f"/v1/services/{service['name']}")
    until(lambda: not list((state / "state").glob("services/*/run/serve.sock")),
          30, "the replicas to stop")


def run(api: httpx.Client, sock: Path, root: Path, env: dict[str, str],
        args: argparse.Namespace) -> None:
    register(api, "tiny", TINY)
    register(api, "slow", SLOW)
    first, loaded = cold_start(api)
    serve(api, "tiny", "tiny@1")
    serve(api, "slow1", "slow@1")
    serve(api, "slow16", "slow@1", max_batch=16, max_wait_ms=5)
    for name in ("tiny", "slow1", "slow16"):
        wait_ready(api, name)
    direct = replica_sockets(root / "state")["tiny"]
    invoke = "/v1/services/tiny/invoke/predict"

    on_replica = measure((direct, None), "/predict", count=args.requests)
    via_proxy = measure((sock, None), invoke, count=args.requests)
    overhead = pct(via_proxy, 0.5) - pct(on_replica, 0.5)
    print(f"1. latency, tiny model, {args.requests} requests one at a time")
    print(f"   direct to the replica  p50 {pct(on_replica, .5):6.2f} ms  "
          f"p99 {pct(on_replica, .99):6.2f} ms")
    print(f"   through the daemon     p50 {pct(via_proxy, .5):6.2f} ms  "
          f"p99 {pct(via_proxy, .99):6.2f} ms")
    print(f"   overhead p50 {overhead:.2f} ms (target <= 1 ms: {verdict(overhead <= 1)}), "
          f"ratio {pct(via_proxy, .5) / pct(on_replica, .5):.2f}x; the daemon's CPU per "
          f"request {daemon_cpu(sock, invoke, args.requests):.2f} ms")

    rate_direct = throughput((direct, None), "/predict", args.clients, args.seconds)
    rate_proxy = throughput((sock, None), invoke, args.clients, args.seconds)
    ratio = rate_proxy / rate_direct
    print(f"2. throughput, {args.clients} clients: direct {rate_direct:.0f}/s, "
          f"through the daemon {rate_proxy:.0f}/s: {ratio:.2f}x "
          f"(target >= 0.7x: {verdict(ratio >= 0.7)})")

    unbatched = throughput((sock, None), "/v1/services/slow1/invoke/predict",
                           args.clients, args.seconds)
    batched = throughput((sock, None), "/v1/services/slow16/invoke/predict",
                         args.clients, args.seconds)
    speedup = batched / unbatched
    print(f"3. dynamic batching (predict_batch 20 ms for 1 or 16 inputs), {args.clients} "
          f"clients through the daemon: {unbatched:.0f}/s without, {batched:.0f}/s with "
          f"max_batch 16: {speedup:.1f}x (target >= 5x: {verdict(speedup >= 5)})")
    sockets = replica_sockets(root / "state")
    alone = [throughput((sockets[name], None), "/predict", args.clients, args.seconds)
             for name in ("slow1", "slow16")]
    with uds_client(sockets["slow16"], "http://replica") as replica:
        batching = replica.get("/metadata").json()["batching"]
    print(f"   the same straight to the replicas: {alone[0]:.0f}/s without, {alone[1]:.0f}/s "
          f"with: {alone[1] / alone[0]:.1f}x; mean batch "
          f"{batching['inputs'] / max(1, batching['calls']):.1f} inputs")

    base = pct(via_proxy, .5)
    with ServerClient(local_http_client(sock), name="bench") as client:
        ways = {"local socket": forwarded(client, "tiny", args.requests)}
    if os.geteuid() == 0 and Path("/usr/sbin/sshd").exists():
        ways.update({f"{t} over a loopback sshd": samples for t, samples in
                     over_ssh(root, sock, "tiny", args.requests).items()})
    else:
        print("   (not root, or no sshd: the forward over SSH is left out)")
    print(f"4. nai service forward, p50 against the proxy on the daemon's socket "
          f"({base:.2f} ms):")
    for way, samples in ways.items():
        print(f"   {way:26} p50 {pct(samples, .5):6.2f} ms  p99 {pct(samples, .99):6.2f} ms"
              f"  {pct(samples, .5) / base:.2f}x")

    print(f"5. cold start: {first:.2f} s from POST /v1/services to the first answer; the "
          f"model's own load() {loaded:.2f} s ({first / max(loaded, 1e-9):.1f}x); "
          f"median per-request p50 here {statistics.median(via_proxy) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
