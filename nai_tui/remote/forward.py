"""`nai service forward`: a local TCP port whose HTTP requests go to a service.

Like `kubectl port-forward`, but at the HTTP level: each request that arrives on
127.0.0.1:PORT is sent to `/v1/services/{name}/invoke/{path}` through the client's own
transport (the local socket, or an SSH channel), so the daemon checks who is asking
exactly as for any other call, and the answer is relayed back as it streams. Only
this machine's loopback listens: whoever can reach the port acts as you towards the
service, as with `ssh -L`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nai_server.protocol import Invalid, NaiError
from nai_tui.remote.client import ServerClient

# Hop-by-hop headers (RFC 9110 §7.6.1) and those the transport sets itself.
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                  "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length"})
_CHUNK = 64 * 1024


class _Relay(BaseHTTPRequestHandler):
    """One local connection; requests are relayed one after the other (keep-alive)."""

    protocol_version = "HTTP/1.1"
    # An answer goes out in several writes (head, chunks, the last chunk): with Nagle's
    # algorithm the last waits for the client's delayed ACK, 40 ms a request.
    disable_nagle_algorithm = True
    server: ServiceForwarder

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers, dropped
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _relay(self) -> None:
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        started = False
        try:
            with self.server.client.invoke_stream(
                    self.server.service, self.path.lstrip("/"), method=self.command,
                    content=body or None, headers=headers) as response:
                started = True
                self.send_response(response.status_code, response.reason_phrase)
                for key, value in response.headers.multi_items():
                    if key.lower() not in _HOP:
                        self.send_header(key, value)
                length = response.headers.get("content-length")
                chunked = length is None and self.command != "HEAD"
                if length is not None:
                    self.send_header("Content-Length", length)
                elif chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in response.iter_raw(_CHUNK):
                    if not piece:
                        continue
                    if chunked:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    else:
                        self.wfile.write(piece)
                    self.wfile.flush()
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
            self.server.count()
        except Invalid as exc:
            self._fail(exc, 400, "invalid")
        except NaiError as exc:
            if started:  # part of the answer went out: all the caller can learn is the cut
                self.server.report(f"{self.command} {self.path}: {exc}")
                self.close_connection = True
            else:
                self._fail(exc)

    def _fail(self, exc: NaiError, status: int = 502, code: str = "bad_gateway") -> None:
        """The service could not be reached (502), or the request was refused before it
        left (400): an answer the caller can read, and a line for the person who runs
        the forward."""
        self.server.report(f"{self.command} {self.path}: {exc}")
        payload = (b'{"error": {"code": "%s", "message": %s}}'
                   % (code.encode(), _json_string(str(exc))))
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _relay

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the daemon keeps the service's request metrics."""


def _json_string(text: str) -> bytes:
    return json.dumps(text).encode()


class ServiceForwarder(ThreadingHTTPServer):
    """Listen on 127.0.0.1:`port` (0: any free port) and relay to `service`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, client: ServerClient, service: str, port: int = 0,
                 on_error: Any = None) -> None:
        self.client = client
        self.service = service
        self.on_error = on_error
        self.requests = 0
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Relay)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def count(self) -> None:
        with self._lock:
            self.requests += 1

    def report(self, message: str) -> None:
        if self.on_error is not None:
            self.on_error(message)
