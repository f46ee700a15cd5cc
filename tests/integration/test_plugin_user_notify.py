"""Per-user notifications through the real daemon, as real unix users: each user
subscribes a URL of their own to their jobs' events, the webhook notifier delivers
them to a local HTTP server, and nobody is ever told of another user's job."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]

from nai_server.protocol import TERMINAL_STATES

pytestmark = [needs_root]


@pytest.fixture
def hooks() -> Iterator[tuple[str, dict[str, list[dict]]]]:
    """A local HTTP server: (its base URL, the JSON bodies POSTed to each path)."""
    got: dict[str, list[dict]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.setdefault(self.path, []).append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", got
    server.shutdown()
    server.server_close()


def test_users_are_told_of_their_own_jobs_only(daemon_factory, make_user, hooks) -> None:
    base, got = hooks
    daemon: Daemon = daemon_factory(plugins={"webhook": {
        "timeout": 5, "options": {"user_hosts": ["127.0.0.1"]}}})
    daemon.start()
    alice, bob = make_user(), make_user()
    for user in (alice, bob):
        assert daemon.admin("user", "add", user.name).returncode == 0

    def subscribe(user, target: str, **body):
        return daemon.as_user(user, "POST", "/v1/notify",
                              {"via": "webhook", "target": target, **body})

    made = subscribe(alice, f"{base}/alice", events=["succeeded", "failed"])
    assert made.status == 201, made.body
    assert subscribe(bob, f"{base}/bob").status == 201
    assert subscribe(bob, "file:///etc/passwd").status == 400
    assert subscribe(bob, f"{base}/x", events=["exploded"]).status == 400
    assert daemon.as_user(bob, "POST", "/v1/notify",
                          {"via": "nope", "target": f"{base}/x"}).status == 404
    # Bob neither sees nor removes alice's subscription.
    assert [s["target"] for s in daemon.as_user(bob, "GET", "/v1/notify").json()] == \
        [f"{base}/bob"]
    assert daemon.as_user(bob, "DELETE", f"/v1/notify/{made.json()['id']}").status == 404

    def run(user, command: str) -> int:
        job = daemon.as_user(user, "POST", "/v1/jobs", {"spec": {"command": command,
                                                                 "gpus": 0}})
        assert job.status == 201, job.body
        job_id = job.json()["id"]
        wait_for(lambda: daemon.as_user(user, "GET", f"/v1/jobs/{job_id}").json()["state"]
                 in TERMINAL_STATES, what=f"job {job_id} to end")
        return int(job_id)

    ok, bad = run(alice, "true"), run(alice, "exit 3")
    bobs = run(bob, "true")

    def told(path: str) -> list[tuple[int, str, str]]:
        return sorted((e["job_id"], e["event"], e["user"]) for e in got.get(path, []))

    wait_for(lambda: len(told("/alice")) == 2 and len(told("/bob")) == 1,
             what="the notices")
    assert told("/alice") == [(ok, "succeeded", alice.name), (bad, "failed", alice.name)]
    assert told("/bob") == [(bobs, "succeeded", bob.name)]
    assert "exit 3" in next(e["text"] for e in got["/alice"] if e["job_id"] == bad)
    # Unsubscribed, alice hears nothing more.
    assert daemon.as_user(alice, "DELETE", f"/v1/notify/{made.json()['id']}").status == 200
    assert daemon.as_user(alice, "GET", "/v1/notify").json() == []
    last = run(alice, "true")
    run(bob, "true")
    wait_for(lambda: len(told("/bob")) == 2, what="bob's second notice")
    assert all(job != last for job, _, _ in told("/alice"))
    assert set(got) == {"/alice", "/bob"}
