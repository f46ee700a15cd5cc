"""`nai service forward`: a local TCP port whose HTTP requests go to a service.

Like `kubectl port-forward`, but at the HTTP level: each request that arrives on
127.0.0.1:PORT is sent to `/v1/services/{name}/invoke/{path}` through the client's own
transport (the local socket, or an SSH channel), so the daemon checks who is asking
exactly as for any other call, and the answer is relayed back as it streams. Only
this machine's loopback listens: whoever can reach the port acts as you towards the
service, as with `ssh -L`.

A forward outlives a daemon restart or a lost SSH connection: a request that finds the
link down is sent again on the client's one backoff (`backoff.FORWARDS`) when it never
reached the daemon or changes nothing; one that may have reached it is never sent twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from nai_server.protocol import ConnectionFailed, Invalid, NaiError
from nai_tui.remote.backoff import FORWARDS, Backoff
from nai_tui.remote.client import ServerClient
from nai_tui.remote.transports import FINAL_FAILURES, RETRYABLE_METHODS

# Hop-by-hop headers (RFC 9110 §7.6.1) and those the transport sets itself.
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                  "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length"})
_CHUNK = 64 * 1024
# What `nai-server dial-stdio` says when the daemon's socket cannot be reached: the
# request went no further than the relay (the SSH transports' words for ConnectError).
_NO_DAEMON = ("nai-server dial-stdio: no daemon socket", "nai-server dial-stdio: cannot connect")


class _Relay(BaseHTTPRequestHandler):
    """One local connection; requests are relayed one after the other (keep-alive)."""

    protocol_version = "HTTP/1.1"
    # An answer goes out in several writes (head, chunks, the last chunk): with Nagle's
    # algorithm the last waits for the client's delayed ACK, 40 ms a request.
    disable_nagle_algorithm = True
    server: ServiceForwarder
    _started = False  # this try's answer has begun to go out

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
        backoff = Backoff(self.server.policy, sleep=self.server.sleep)
        while True:
            self._started = False
            try:
                self._send(body, headers)
                self.server.count()
                return
            except Invalid as exc:
                self._fail(exc, 400, "invalid")
                return
            except NaiError as exc:
                if self._started:  # part of the answer went out: the caller learns of the cut
                    self.server.report(f"{self.command} {self.path}: {exc}")
                    self.close_connection = True
                    return
                delay = backoff.next_delay(exc) if self._may_resend(exc) else None
                if delay is None:
                    self._fail(exc)
                    return
                self.server.report(f"{self.command} {self.path}: {exc}; "
                                   f"trying again in {delay:.1f} s")
                backoff.sleep(delay)

    def _may_resend(self, exc: NaiError) -> bool:
        """Whether a request that got no answer may be sent again: the link to the
        daemon dropped (a daemon restart, an SSH connection lost), and the request
        never reached it or changes nothing (a GET). A request that may have reached
        the service and changes state is never sent twice; a refused host key or login
        would only repeat itself, and a slow answer is no dropped link."""
        if not isinstance(exc, ConnectionFailed) or isinstance(exc, FINAL_FAILURES):
            return False
        causes = _causes(exc)
        if any(isinstance(c, httpx.TimeoutException) and not isinstance(c, httpx.ConnectTimeout)
               for c in causes):
            return False
        never_sent = (any(isinstance(c, httpx.ConnectError | httpx.ConnectTimeout)
                          for c in causes)
                      or any(words in str(exc) for words in _NO_DAEMON))
        return never_sent or self.command in RETRYABLE_METHODS

    def _send(self, body: bytes, headers: dict[str, str]) -> None:
        """One try: the request to the service, its answer relayed as it streams
        (`_started` once the answer's head went out)."""
        with self.server.client.invoke_stream(
                self.server.service, self.path.lstrip("/"), method=self.command,
                content=body or None, headers=headers) as response:
            self._started = True
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


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and the errors it was raised from."""
    found: list[BaseException] = []
    while exc is not None and exc not in found:
        found.append(exc)
        exc = exc.__cause__  # type: ignore[assignment]
    return found


class ServiceForwarder(ThreadingHTTPServer):
    """Listen on 127.0.0.1:`port` (0: any free port) and relay to `service`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, client: ServerClient, service: str, port: int = 0,
                 on_error: Any = None) -> None:
        self.client = client
        self.service = service
        self.on_error = on_error
        # How a request that found the link to the daemon down is sent again (tests
        # replace the sleep).
        self.policy = FORWARDS
        self.sleep: Callable[[float], None] = time.sleep
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
