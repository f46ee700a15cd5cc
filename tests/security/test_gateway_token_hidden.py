"""A gateway token is nai's secret, not the model's: the daemon checks it and keeps it.
A replica runs its owner's code (and whatever the model's files hold); if it saw the
`Authorization` header it could log tokens and replay them against the gateway, or,
for a token of another service (one that `gateway_allows` refuses, so never relayed),
learn nothing; for its own, every caller's token."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import httpx
import pytest
from conftest import Daemon, UnixUser  # type: ignore[import-not-found]

from nai_server.testing import upload_tree, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")

# The model's own server: every request answered with the headers it arrived with.
ECHO = b"""import json, os, socketserver
from http.server import BaseHTTPRequestHandler

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self):
        return "unix"

    def do_GET(self):
        data = json.dumps([[k.lower(), v] for k, v in self.headers.items()]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

Server(os.environ["NAI_SERVE_SOCKET"], Handler).serve_forever()
"""
NAI_YAML = b"serve:\n  command: python echo.py\n  health: /health\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shared_model(daemon: Daemon, name: str, files: dict[str, bytes]) -> None:
    """A model every user may read, set up by root (not under test)."""
    with daemon.client() as root:
        tree = upload_tree(root, files)
        made = root.post("/v1/models", json={"name": name, "tree_id": tree, "shared": True})
        assert made.status_code == 201, made.text


@pytest.fixture
def gateway(daemon_factory, make_user) -> Iterator[tuple[Daemon, UnixUser, int]]:
    port = free_port()
    daemon = daemon_factory(services={"gateway": {"listen": f"127.0.0.1:{port}"},
                                      "probe_seconds": 0.2})
    daemon.start()
    user = make_user()
    with daemon.client() as root:
        assert root.post("/v1/users", json={"name": user.name}).status_code == 201
    yield daemon, user, port
    with contextlib.suppress(Exception), daemon.client() as root:
        for svc in root.get("/v1/services").json()["services"]:
            root.delete(f"/v1/services/{svc['name']}")

    def gone() -> bool:
        return not any(os.stat(f"/proc/{p}").st_uid == user.uid
                       for p in os.listdir("/proc") if p.isdigit()
                       and os.path.exists(f"/proc/{p}"))
    with contextlib.suppress(AssertionError, OSError):
        wait_for(gone, timeout=15, what="replicas to stop")


def test_the_replica_never_sees_the_gateway_token(gateway) -> None:
    daemon, user, port = gateway
    shared_model(daemon, "echo", {"nai.yaml": NAI_YAML, "echo.py": ECHO})
    made = daemon.as_user(user, "POST", "/v1/services", {"name": "echo", "model": "echo"})
    assert made.status == 201, made.body

    def ready() -> bool:
        with daemon.client() as root:
            return bool(root.get("/v1/services/echo").json()["state"] == "ready")
    wait_for(ready, timeout=60, what="the echo service to be ready")
    made = daemon.as_user(user, "POST", "/v1/services/echo/tokens", {"label": "t"})
    assert made.status == 201, made.body
    token = made.json()["token"]

    for scheme in ("Bearer", "bearer"):
        answer = httpx.get(f"http://127.0.0.1:{port}/echo/anything", timeout=30,
                           headers={"Authorization": f"{scheme} {token}", "X-Kept": "yes"})
        assert answer.status_code == 200, answer.text
        seen = dict(answer.json())
        assert seen.get("x-kept") == "yes"  # the caller's other headers do arrive
        assert "authorization" not in seen
        assert token not in answer.text
