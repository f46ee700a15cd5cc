"""The first-party `email` notifier against a local SMTP server: a user subscribes an
address of theirs, is mailed their own job's event and nobody else's, and addresses
outside the admin's domains, or that could smuggle a header, are refused."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

import nai_plugins.mail as mail
from nai_server.config import PluginConfig
from nai_server.plugins import PluginRegistry
from nai_server.plugins.contracts import JobEvent, Kind
from nai_server.protocol import Invalid
from nai_server.testing import make_service


class Smtp(socketserver.StreamRequestHandler):
    """Just enough SMTP to take mail: the envelope and the data of each."""

    got: ClassVar[list[dict]] = []

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self.reply("220 test")
        envelope: dict = {"rcpt": [], "data": ""}
        while line := self.rfile.readline().decode():
            verb = line[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 test")
            elif verb == "MAIL":
                self.reply("250 ok")
            elif verb == "RCPT":
                envelope["rcpt"].append(line.split(":", 1)[1].strip().strip("<>"))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go on")
                while (data := self.rfile.readline().decode()) not in (".\r\n", ""):
                    envelope["data"] += data
                self.got.append(envelope)
                envelope = {"rcpt": [], "data": ""}
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


@pytest.fixture
def smtp() -> Iterator[tuple[int, list[dict]]]:
    Smtp.got = []
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Smtp)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], Smtp.got
    server.shutdown()
    server.server_close()


def event(job_id: int, user: str) -> JobEvent:
    return JobEvent(event="failed", job_id=job_id, user=user, group=None, name="train",
                    state="failed", at=0.0, exit_code=3)


def test_users_are_mailed_their_own_jobs_only(tmp_path: Path, smtp) -> None:
    port, got = smtp
    registry = PluginRegistry.from_objects(
        {"email": PluginConfig(timeout=10, options={
            "host": "127.0.0.1", "port": port, "from": "nai@lab.example",
            "user_domains": ["lab.example"]})}, [("email", Kind.NOTIFIER, mail)])
    service = make_service(tmp_path / "state", plugins=registry)
    try:
        subs, notifiers = service.plugins.subscriptions, service.plugins.notifiers
        subs.add("ann", "email", "ann@lab.example", ["failed"])
        for bad in ("bob@elsewhere.example", "ann@lab.example\r\nBcc: x@lab.example",
                    "ann@lab.example, x@lab.example", "Ann <ann@lab.example>"):
            with pytest.raises(Invalid):
                subs.add("bob", "email", bad, ["failed"])
        notifiers.put(event(7, "ann"))
        notifiers.put(event(8, "bob"))  # bob has no subscription: nobody is mailed
        assert notifiers.drain(20)
    finally:
        service.close()
    assert [m["rcpt"] for m in got] == [["ann@lab.example"]]
    assert "Subject: nai: job 7 train failed (exit 3)" in got[0]["data"]
