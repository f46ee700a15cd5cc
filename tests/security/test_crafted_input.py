"""Crafted request bodies, sent as a registered non-root unix user through the real
relay to the real daemon (issue 13): none may freeze it, poison its state file, or
answer with a server error."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from nai_server.store.journal import read_state
from nai_server.testing import wait_for
from tests.integration.conftest import (
    BIN,
    Daemon,
    Response,
    UnixUser,
    needs_root,
    parse_response,
    raw_request,
)

pytestmark = [needs_root]

# Nine levels of nine aliases: 387 million strings once expanded, in under 600 bytes.
ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]"
       for i in range(8)]
    + ["command: i"]) + "\n"


@pytest.fixture
def alice(daemon: Daemon, make_user: Callable[[], UnixUser]) -> UnixUser:
    user = make_user()
    with daemon.client() as root:
        assert root.post("/v1/users", json={"name": user.name}).status_code == 201
    return user


def relay_raw(daemon: Daemon, user: UnixUser, raw: bytes) -> bytes:
    """Send `raw` bytes through `nai-server dial-stdio` run as `user`, then EOF; all
    that came back."""
    argv = [str(BIN / "nai-server"), "dial-stdio", "--socket", str(daemon.socket)]
    proc = subprocess.run(argv, input=raw, capture_output=True, timeout=60,
                          user=user.uid, group=user.gid, extra_groups=[])
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def split_responses(raw: bytes) -> list[Response]:
    """Consecutive HTTP/1.1 responses with Content-Length bodies."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        out.append(parse_response(head + b"\r\n\r\n" + rest[:length]))
        raw = rest[length:]
    return out


def test_a_yaml_alias_bomb_is_refused_at_once(daemon: Daemon, alice: UnixUser) -> None:
    answer = daemon.as_user(alice, "POST", "/v1/jobs", {"spec_yaml": ALIAS_BOMB})
    assert answer.status == 400, answer.body[:300]
    message = answer.json()["error"]["message"]
    assert "YAML anchors/aliases (&name, *name) are not allowed in nai.yaml" in message
    assert len(answer.body) < 1000  # not the 351 MB echo of the expanded value
    assert daemon.as_user(alice, "GET", "/v1/version").status == 200


def test_a_huge_time_limit_is_refused_and_the_state_still_commits(
        daemon: Daemon, alice: UnixUser) -> None:
    state = daemon.state / "state.json"
    huge = daemon.as_user(alice, "POST", "/v1/jobs", {
        "spec": {"command": "true", "gpus": 0, "time_limit": "99999999999999999999d"}})
    assert huge.status == 400, huge.body[:300]
    assert "time_limit: must be at most 366d" in huge.json()["error"]["message"]
    # The same number through nai.yaml's text and through the command line's overrides.
    for body in ({"spec_yaml": "command: 'true'\ntime_limit: 99999999999999999999d\n"},
                 {"spec": {"command": "true"}, "overrides": {"time_limit": 10**30}},
                 {"spec": {"command": "true", "after": [2**64]}}):
        assert daemon.as_user(alice, "POST", "/v1/jobs", body).status == 400, body
    ok = daemon.as_user(alice, "POST", "/v1/jobs", {"spec": {"command": "true", "gpus": 0}})
    assert ok.status == 201, ok.body[:300]
    job_id = ok.json()["id"]
    # A poisoned store kept the job in memory and never wrote state.json (or its
    # journal) again.
    wait_for(lambda: str(job_id) in read_state(state)["jobs"], what="the job to be saved")


def test_oversized_bodies_are_refused_with_413_before_they_are_read(
        daemon: Daemon, alice: UnixUser) -> None:
    big = {"spec": {"command": "true", "env": {"X": "x" * (2 << 20)}}}
    declared = daemon.as_user(alice, "POST", "/v1/jobs", big)
    assert declared.status == 413, declared.body[:300]
    error = declared.json()["error"]
    assert error["code"] == "too_large" and "1.0 MiB" in error["message"]

    # Chunked, without a Content-Length: counted as it arrives.
    data = json.dumps(big).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 65536]), data[i:i + 65536])
                      for i in range(0, len(data), 65536))
    head = (b"POST /v1/jobs HTTP/1.1\r\nHost: nai\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunked = parse_response(relay_raw(daemon, alice, head + chunks + b"0\r\n\r\n"))
    assert chunked.status == 413, chunked.body[:300]
    assert chunked.json()["error"]["code"] == "too_large"
    assert daemon.as_user(alice, "GET", "/v1/version").status == 200


def test_pipelined_requests_before_eof_all_get_answers(daemon: Daemon, alice: UnixUser) -> None:
    one = raw_request("GET", "/v1/me").replace(b"Connection: close", b"Connection: keep-alive")
    for _ in range(3):  # however the requests and the EOF happen to arrive
        answers = split_responses(relay_raw(daemon, alice, one * 5))
        assert [a.status for a in answers] == [200] * 5
        assert {a.json()["user"] for a in answers} == {alice.name}


def test_malformed_values_are_400_not_500(daemon: Daemon, alice: UnixUser) -> None:
    for body in ({"spec": {"command": "true"}, "code_tree": "not-a-digest"},
                 {"spec_yaml": "command: echo \ud800\n"},
                 {"spec": {"command": "echo \ud800"}}):
        answer = daemon.as_user(alice, "POST", "/v1/jobs", body)
        assert answer.status == 400, (body, answer.body[:300])
    tree = daemon.as_user(alice, "POST", "/v1/trees", {"entries": [
        {"path": "a\ud800", "size": 1, "sha256": "a" * 64}]})
    assert tree.status == 400, tree.body[:300]
    newline = daemon.as_user(alice, "POST", "/v1/trees", {"entries": [
        {"path": "a\nb", "size": 1, "sha256": "a" * 64}]})
    assert newline.status == 400 and "control character" in newline.json()["error"]["message"]
