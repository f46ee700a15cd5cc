"""API round trip over the daemon's unix socket vs through `nai-server dial-stdio`.

Starts a personal-mode daemon, then times `GET /v1/me` on one keep-alive
connection straight to the socket, and the same through the relay's stdin/stdout
(what an SSH exec channel carries). Prints p50/p99 of both and the ratio.

    .venv/bin/python bench/api.py [--requests N]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent
REQUEST = b"GET /v1/me HTTP/1.1\r\nHost: nai\r\n\r\n"


class Reader:
    """Reads HTTP/1.1 responses with Content-Length from a byte source."""

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self.recv = recv
        self.buf = b""

    def response(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._more()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        while len(rest) < length:
            rest += self._more()
        self.buf = rest[length:]
        return rest[:length]

    def _more(self) -> bytes:
        data = self.recv(65536)
        if not data:
            raise ConnectionError("connection closed")
        return data


def time_requests(send: Callable[[bytes], object], reader: Reader, n: int) -> list[float]:
    for _ in range(50):  # warm-up
        send(REQUEST)
        reader.response()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        send(REQUEST)
        reader.response()
        samples.append(time.perf_counter() - start)
    return samples


def pct(samples: list[float], q: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(q * len(samples)))] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sock_path = Path(tmp) / "nai.sock"
        daemon = subprocess.Popen(
            [str(BIN / "nai-server"), "run", "--personal", "--state-dir", f"{tmp}/state",
             "--socket", str(sock_path), "--fake-gpus", "2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while not sock_path.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            direct = socket.socket(socket.AF_UNIX)
            direct.connect(str(sock_path))
            local = time_requests(direct.sendall, Reader(direct.recv), args.requests)
            direct.close()

            relay = subprocess.Popen(
                [str(BIN / "nai-server"), "dial-stdio", "--socket", str(sock_path)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
            assert relay.stdin is not None and relay.stdout is not None
            out_fd = relay.stdout.fileno()
            relayed = time_requests(relay.stdin.write,
                                    Reader(lambda n: os.read(out_fd, n)), args.requests)
            relay.stdin.close()
            relay.wait(10)
        finally:
            daemon.terminate()
            daemon.wait(20)
    p50_l, p50_r = statistics.median(local) * 1e3, statistics.median(relayed) * 1e3
    print(f"unix socket : p50 {p50_l:6.3f} ms  p99 {pct(local, 0.99):6.3f} ms")
    print(f"dial-stdio  : p50 {p50_r:6.3f} ms  p99 {pct(relayed, 0.99):6.3f} ms")
    print(f"ratio dial-stdio/socket p50: {p50_r / p50_l:.2f}  "
          f"p99: {pct(relayed, 0.99) / pct(local, 0.99):.2f}")


if __name__ == "__main__":
    main()
