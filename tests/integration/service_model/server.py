"""A model's own server for the services tests (its `serve:` command): stdlib HTTP on
the unix socket $NAI_SERVE_SOCKET. GET /health, POST /predict (the sum of the inputs
and the model's weights file), GET /whoami (pid, uid, model dir, GPUs), GET /flood (a
status line, then headers without end: FLOOD bytes of them, or until cut off)."""

import json
import os
import socketserver
import sys
from http.server import BaseHTTPRequestHandler

SOCKET = os.environ["NAI_SERVE_SOCKET"]
MODEL = os.environ["NAI_MODEL_DIR"]
with open(os.path.join(MODEL, "weights.txt")) as f:
    WEIGHTS = f.read().strip()
FLOOD = 16 << 20  # finite: a daemon that reads them all is told by the log, not hurt


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write("request " + (format % args) + "\n")

    def _send(self, code: int, payload: object) -> None:
        data = json.dumps(payload, sort_keys=True).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Replica", "fixture")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"ok": True})
        elif self.path == "/flood":
            self.close_connection = True
            sent = 0
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                while sent < FLOOD:
                    self.wfile.write(b"x: y\r\n" * 1024)
                    sent += 6 * 1024
            except OSError:
                print("flood cut off after", sent, "bytes", flush=True)
                return
            print("flood sent whole", flush=True)
        elif self.path.startswith("/whoami"):
            self._send(200, {"pid": os.getpid(), "uid": os.getuid(), "model_dir": MODEL,
                             "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
                             "query": self.path.partition("?")[2]})
        else:
            self._send(404, {"error": "no such path"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/predict":
            self._send(200, {"sum": sum(body.get("inputs", [])), "weights": WEIGHTS})
        else:
            self._send(404, {"error": "no such path"})


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


if os.path.lexists(SOCKET):
    os.unlink(SOCKET)
print("serving on", SOCKET, "weights", WEIGHTS, flush=True)
Server(SOCKET, Handler).serve_forever()
