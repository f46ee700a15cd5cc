"""Sync speed over SSH on loopback: nai (paramiko and openssh transports) vs scp and
rsync, all against one real sshd started here, in the same run.

Data: one 1 GiB file, and 10,000 files of 4 KiB. For each: first upload (nai hashes
with a cold cache, then sends what the server lacks), then a no-op re-sync. Also the
API round trip over SSH vs the local socket. Needs root (logs in as root with a key)
and openssh-server, openssh-client, rsync.

Targets: large file >= 0.6x scp's throughput with paramiko and >= 0.9x with openssh;
10k small files first upload no slower than rsync; no-op re-sync of 10k files under
0.5 s and faster than rsync's.

    .venv/bin/python bench/sync.py [--big-mib N] [--small N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from nai_server.testing.loopback_sshd import make_sshd
from nai_tui.remote.client import ServerClient
from nai_tui.remote.transports import http_client_for, local_http_client
from nai_tui.sync.hashcache import HashCache
from nai_tui.sync.push import push

BIN = Path(sys.executable).parent


@dataclass
class Root:
    name: str = "root"
    uid: int = 0


class Daemon:
    """A personal-mode nai-server with a fresh state dir (so every upload is a first)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "nai.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def restart(self) -> None:
        self.stop()
        set_aside(self.root / "state")
        env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        self.proc = subprocess.Popen(
            [str(BIN / "nai-server"), "run", "--personal", "--state-dir", str(self.root / "state"),
             "--socket", str(self.sock)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("nai-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None


def make_data(root: Path, big_mib: int, small: int) -> tuple[Path, Path]:
    big, many = root / "big", root / "small"
    big.mkdir(parents=True)
    with (big / "weights.bin").open("wb") as f:
        for _ in range(big_mib):
            f.write(os.urandom(1 << 20))
    many.mkdir()
    for i in range(small):
        sub = many / f"d{i // 500:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:05d}.bin").write_bytes(os.urandom(4096))
    old = time.time() - 60  # past git's "racily clean" window, as files usually are
    for path in [*big.rglob("*"), *many.rglob("*")]:
        os.utime(path, (old, old))
    return big, many


def set_aside(path: Path) -> None:
    """Move `path` out of the way, to be deleted after the last timed run.

    On ext4 without a journal (as on these VMs) the inode allocator skips every inode
    deleted in the last 60 s, one by one: creating 10,000 files right after deleting
    10,000 cost up to 10x more kernel time. Deleting between runs would charge one
    contender for the one before it."""
    if path.exists():
        path.rename(path.parent / f".old-{path.name}-{time.monotonic_ns()}")


def settle(inputs: Path) -> None:
    """Give the next contender the same start as the others: earlier writes on disk, the
    page cache emptied, then the input files read back in.

    These VMs back guest memory lazily: the first write into a never-used page costs
    several times a later one, so whoever ran on fresh pages (1 GiB of page cache per
    contender) paid up to 1.5 s more. Dropped caches hand out pages already used."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    for path in [inputs, *inputs.rglob("*")]:
        if path.is_file():
            with path.open("rb") as f:
                while f.read(1 << 20):
                    pass
    time.sleep(0.5)


def timed(fn: Callable[[], object], inputs: Path) -> float:
    settle(inputs)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="every contender runs this "
                        "many times, in turns; the medians are compared")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/sync.py logs in to a loopback sshd as root: run it as root")
    tmp = Path(tempfile.mkdtemp(prefix="nai-bench-sync-"))
    daemon = Daemon(tmp)
    sshd = make_sshd(tmp / "sshd", f"{BIN}:/usr/local/bin:/usr/bin:/bin")
    try:
        key = sshd.authorize(Root())
        known = sshd.write_known_hosts(tmp / "known_hosts")
        target = f"ssh://root@127.0.0.1:{sshd.port}"
        ssh_opts = ["-p", str(sshd.port), "-i", str(key), "-o", f"UserKnownHostsFile={known}",
                    "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
        relay = f"nai-server dial-stdio --socket {daemon.sock}"
        big, many = make_data(tmp / "data", args.big_mib, args.small)

        def client(transport: str) -> ServerClient:
            http = http_client_for(target, transport=transport, known_hosts=known,
                                   identity_file=key, remote_command=relay,
                                   ssh_options=["-i", str(key),
                                                "-o", f"UserKnownHostsFile={known}"],
                                   runtime_dir=tmp / "ssh-run")
            return ServerClient(http, name="bench")

        def nai_first(folder: Path, transport: str) -> tuple[float, float]:
            daemon.restart()
            cache_path = tmp / f"cache-{transport}-{folder.name}.sqlite"
            cache_path.unlink(missing_ok=True)
            with client(transport) as c:
                c.version()  # connect first: time the sync, not the SSH handshake
                with HashCache(cache_path) as cache:
                    first = timed(lambda: push(c, folder, cache=cache), folder)
                with HashCache(cache_path) as cache:
                    noop = timed(lambda: push(c, folder, cache=cache), folder)
            return first, noop

        def scp(src: Path) -> float:
            dest = tmp / "scp-dest"
            set_aside(dest)
            dest.mkdir()
            return timed(lambda: subprocess.run(
                ["scp", "-q", "-r", "-P", str(sshd.port), *ssh_opts[2:], str(src),
                 f"root@127.0.0.1:{dest}/"], check=True), src)

        def rsync(src: Path) -> tuple[float, float]:
            dest = tmp / "rsync-dest"
            set_aside(dest)
            rsh = "ssh " + " ".join(ssh_opts)
            run = ["rsync", "-a", "-e", rsh, f"{src}/", f"root@127.0.0.1:{dest}/"]
            first = timed(lambda: subprocess.run(run, check=True), src)
            noop = timed(lambda: subprocess.run(run, check=True), src)
            return first, noop

        def one_round() -> dict[str, float]:
            got: dict[str, float] = {}
            got["big scp"] = scp(big / "weights.bin")
            got["big rsync"], _ = rsync(big)
            got["big nai-paramiko"], _ = nai_first(big, "ssh")
            got["big nai-openssh"], _ = nai_first(big, "openssh")
            got["small rsync"], got["small rsync noop"] = rsync(many)
            got["small scp"] = scp(many)
            got["small nai-paramiko"], got["small nai-paramiko noop"] = nai_first(many, "ssh")
            got["small nai-openssh"], got["small nai-openssh noop"] = nai_first(many, "openssh")
            return got

        # Rounds take turns, so a slow spell of the machine hits every contender alike.
        rounds = [one_round() for _ in range(args.rounds)]
        results = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        size_mb = args.big_mib * (1 << 20) / 1e6
        print(f"median of {args.rounds} round(s); ratios of the medians")
        print(f"1 file of {args.big_mib} MiB (first upload, MB/s):")
        for name in ("scp", "rsync", "nai-paramiko", "nai-openssh"):
            t = results[f"big {name}"]
            print(f"  {name:13s} {t:6.2f} s  {size_mb / t:7.1f} MB/s  "
                  f"ratio to scp {results['big scp'] / t:.2f}")
        print(f"{args.small} files of 4 KiB (first upload):")
        for name in ("rsync", "scp", "nai-paramiko", "nai-openssh"):
            t = results[f"small {name}"]
            print(f"  {name:13s} {t:6.2f} s  ratio to rsync {results['small rsync'] / t:.2f}")
        print(f"no-op re-sync of {args.small} files:")
        for name in ("rsync", "nai-paramiko", "nai-openssh"):
            t = results[f"small {name} noop"]
            print(f"  {name:13s} {t:6.3f} s  ratio to rsync "
                  f"{results['small rsync noop'] / t:.2f}")

        daemon.restart()
        local = ServerClient(local_http_client(daemon.sock))
        remote = client("ssh")
        for c in (local, remote):
            c.me()
        rounds = {}
        for label, c in (("local socket", local), ("ssh (paramiko)", remote)):
            samples = []
            for _ in range(500):
                start = time.perf_counter()
                c.me()
                samples.append(time.perf_counter() - start)
            samples.sort()
            rounds[label] = (statistics.median(samples), samples[int(0.99 * len(samples))])
        print("API round trip (GET /v1/me):")
        for label, (p50, p99) in rounds.items():
            print(f"  {label:15s} p50 {p50 * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms")
        ratio = rounds["ssh (paramiko)"][0] / rounds["local socket"][0]
        print(f"  ratio ssh/local p50: {ratio:.2f}")
        local.close()
        remote.close()
    except (subprocess.CalledProcessError, httpx.HTTPError) as exc:
        sys.exit(f"bench/sync.py failed: {exc}")
    finally:
        daemon.stop()
        sshd.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
