"""Connection exhaustion (issue 13, item 5): one user's idle or half-sent connections
must not use up the daemon's descriptors, crowd out other users, fill the log, or keep
SIGTERM from stopping it. Attacks as real unix users through the real daemon."""

from __future__ import annotations

import json
import logging
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from nai_server import daemon as daemon_module
from nai_server.api.identity import LogThrottle
from nai_server.config import ServerConfig
from nai_server.testing import wait_for
from tests.integration.conftest import Daemon, UnixUser, parse_response

# Run as the attacker: open COUNT connections, stall in a request head on the first
# PARTIAL of them, then wait (with a deadline) until all but KEEP were answered and
# closed by the daemon; report those answers and how many stay open, then hold the
# rest open until stdin closes.
HOLDER = r"""
import json, select, socket, sys, time
path, count, partial, keep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
socks = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    socks.append(s)
for s in socks[:partial]:
    s.sendall(b"GET /v1/version HTTP/1.1\r\nHost: na")
got = {s: b"" for s in socks}
closed = set()
deadline = time.monotonic() + 20
while len(closed) < count - keep and time.monotonic() < deadline:
    ready, _, _ = select.select([s for s in socks if s not in closed], [], [], 0.5)
    for s in ready:
        data = s.recv(65536)
        if data:
            got[s] += data
        else:
            closed.add(s)
print(json.dumps({"answers": [got[s].decode("latin-1") for s in socks if s in closed],
                  "open": count - len(closed)}), flush=True)
sys.stdin.read()
"""


def hold_connections(daemon: Daemon, user: UnixUser, count: int, partial: int,
                     keep: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(daemon.socket), str(count), str(partial), str(keep)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        user=user.uid, group=user.gid, extra_groups=[])
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"the holder exited {proc.wait()}"
    return proc, json.loads(line)


def test_one_users_idle_connections_do_not_lock_out_others(
        daemon_factory: Callable[..., Daemon], make_user: Callable[[], UnixUser]) -> None:
    # Small limits keep it fast: without the per-user cap, A's 24 connections would
    # take all 16 the daemon holds and B would be turned away.
    daemon = daemon_factory(limits={"connections_per_user": 8, "max_connections": 16})
    daemon.start()
    alice, bob = make_user(), make_user()

    holder, report = hold_connections(daemon, alice, count=24, partial=3, keep=8)
    try:
        assert report["open"] == 8
        assert len(report["answers"]) == 16
        for raw in report["answers"]:
            refused = parse_response(raw.encode("latin-1"))
            assert refused.status == 429
            error = refused.json()["error"]
            assert error["code"] == "too_many_connections"
            assert "close some of your nai sessions" in error["message"]

        # Others are still served while A holds everything A may hold.
        assert daemon.as_user(bob, "GET", "/v1/version").status == 200
        assert daemon.client().get("/v1/version").status_code == 200
        assert daemon.as_user(alice, "GET", "/v1/version").status == 429
        # Refusals are logged, but not one line each.
        assert 1 <= daemon.log().count("refused a connection of uid") < 16

        # SIGTERM stops the daemon with A's idle and half-sent connections open
        # (Daemon.stop would SIGKILL it after a while and answer -9).
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        holder.communicate(timeout=30)


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(20)  # a deadline for every read below, not a pause
    sock.connect(path)
    return sock


def _read_to_end(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_slow_request_heads_and_silent_connections_are_closed(
        daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(limits={"header_timeout": 1, "idle_timeout": 1})
    daemon.start()
    path = str(daemon.socket)

    # A legitimate request whose head is in and whose body is slow (an upload).
    body = json.dumps({"digests": []}).encode()
    upload = _connect(path)
    upload.sendall(b"POST /v1/blobs/missing HTTP/1.1\r\nHost: nai\r\nConnection: close\r\n"
                   b"Content-Type: application/json\r\n"
                   b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:5])
    # Begun after the upload's head: its timeout runs out after the upload's would.
    stalled = _connect(path)
    stalled.sendall(b"GET /v1/version HTTP/1.1\r\nHost: na")
    silent = _connect(path)

    answer = parse_response(_read_to_end(stalled))
    assert answer.status == 408
    assert answer.json()["error"]["code"] == "request_timeout"
    assert _read_to_end(silent) == b""

    # The upload outlived the header timeout: it completes and is answered.
    upload.sendall(body[5:])
    done = parse_response(_read_to_end(upload))
    assert done.status == 200 and done.json() == {"missing": []}
    for sock in (upload, stalled, silent):
        sock.close()


def test_out_of_descriptors_logs_a_line_not_a_flood(
        daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory()
    daemon.start()
    assert daemon.proc is not None
    resource.prlimit(daemon.proc.pid, resource.RLIMIT_NOFILE, (200, 200))

    # Root is not capped, so its connections use up every descriptor: asyncio then
    # fails accept() up to 1024 times a second, each once a log entry with a traceback.
    socks = [_connect(str(daemon.socket)) for _ in range(300)]
    try:
        wait_for(lambda: "cannot accept connections" in daemon.log(), what="accept errors")
    finally:
        for sock in socks:
            sock.close()
    wait_for(daemon.answers, what="the daemon to serve again")
    log_text = daemon.log()
    assert log_text.count("cannot accept connections") <= 2
    assert "out of system resource" not in log_text  # asyncio's own report, unthrottled
    assert daemon.stop(signal.SIGTERM) == 0


def test_log_throttle_counts_what_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttle = LogThrottle(logging.getLogger("nai.test"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="nai.test"):
        assert throttle.log(logging.ERROR, "accept failed: %s", "EMFILE")
        for _ in range(500):
            assert not throttle.log(logging.ERROR, "accept failed: %s", "EMFILE")
        now[0] = 10.0
        assert throttle.log(logging.ERROR, "accept failed: %s", "EMFILE")
    assert [r.getMessage() for r in caplog.records] == [
        "accept failed: EMFILE",
        "accept failed: EMFILE (and 500 more since the last such line)",
    ]


def test_max_connections_stays_within_the_open_files_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = ServerConfig.model_validate({"limits": {"max_connections": 4096}}).resolved()
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 1024))
    limits = daemon_module.connection_limits(config)
    assert limits.total == 1024 - daemon_module.FD_RESERVE
    assert 0 in limits.exempt and limits.per_user == 64
