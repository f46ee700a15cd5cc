"""The notifiers shipped in nai_plugins: a JSON line per event in a file, and a JSON POST
(with a Slack-style `text`) to a local HTTP server; each only for the events asked."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from nai_plugins import notify_file, webhook
from nai_server.plugins.contracts import JobEvent, Refuse


def event(kind: str, job_id: int = 4) -> JobEvent:
    return JobEvent(event=kind, job_id=job_id, user="ann", group=None, name="train",
                    state=kind, at=1.0, exit_code=1 if kind == "failed" else None)


def test_notify_file_appends_the_events_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    options = {"path": str(path), "events": ["failed"]}
    for kind in ("started", "failed", "succeeded"):
        notify_file.nai_job_event(event(kind), options)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(e["event"], e["job_id"], e["exit_code"]) for e in lines] == [("failed", 4, 1)]
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.fixture
def hook_server() -> Iterator[tuple[str, list[dict]]]:
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got
    server.shutdown()
    server.server_close()


def test_webhook_posts_json_with_a_text_field(hook_server) -> None:
    url, got = hook_server
    options = {"url": url, "events": ["succeeded", "failed"], "timeout": 5}
    for kind in ("started", "failed"):
        webhook.nai_job_event(event(kind), options)
    assert len(got) == 1
    assert got[0]["event"] == "failed" and got[0]["job_id"] == 4
    assert got[0]["text"] == "nai: job 4 train of ann failed (exit 1)"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost/x",
                                 "http://169.254.169.254/latest/meta-data",
                                 "https://10.1.2.3/h", "http://[::1]/h"])
def test_a_users_webhook_may_not_reach_inside_the_network(url: str) -> None:
    """Without the admin's list of hosts, a user's URL must be a public address: the
    root daemon would otherwise POST to loopback, private or metadata addresses."""
    with pytest.raises(Refuse, match="not a public address"):
        webhook.nai_notify_check(url, {})
    host = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0] if "[" not in url \
        else "::1"
    webhook.nai_notify_check(url, {"user_hosts": [host]})  # the admin allows it by name


def test_a_name_that_does_not_resolve_is_checked_again_at_delivery() -> None:
    """Subscribing to a name that does not resolve now is allowed (no network, a host
    to come); delivering to it is refused unless it then names a public address."""
    url = "https://hooks.invalid/T0"
    webhook.nai_notify_check(url, {})
    with pytest.raises(Refuse, match="cannot resolve"):
        webhook.nai_notify_user(event("failed"), url, {})
