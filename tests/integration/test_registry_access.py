"""Who may do what with datasets and models, through the real daemon as real unix
users: the access matrix of DESIGN §3, every cell asserted.

Actors: the owner (who created the entries), a member of the owning group (not the
creator), another registered user, and an admin. Entries: owned by the owner or by
the group, private or shared. Operations: list, show, pull, push, share, remove.
Readable-but-not-writable answers 403 naming who may; unreadable answers 404, the
same as a name that does not exist.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
import pytest
from conftest import BIN, Daemon, UnixUser, needs_root  # type: ignore[import-not-found]

from nai_server import testing
from nai_tui.remote.transports import BackendTransport, ProcessStream

pytestmark = [needs_root]

ACTORS = ("owner", "member", "other", "admin")
ENTRIES = {  # name: (owned by the group?, shared with everyone?)
    "priv-user": (False, False), "priv-group": (True, False),
    "shared-user": (False, True), "shared-group": (True, True)}


class DialStdioAs(httpcore.NetworkBackend):
    """Each connection is `nai-server dial-stdio` run as `user`, as `Daemon.as_user`
    does, but kept alive for many requests: a relay costs a Python start-up."""

    def __init__(self, daemon: Daemon, user: UnixUser) -> None:
        self.argv = [str(BIN / "nai-server"), "dial-stdio", "--socket", str(daemon.socket)]
        self.user = user

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, user=self.user.uid,
                                group=self.user.gid, extra_groups=[])
        name = self.user.name
        return ProcessStream(proc, lambda status, stderr: AssertionError(
            f"dial-stdio as {name} ended ({status}): {stderr}") if status or stderr else None)

    def close(self) -> None:
        """Each relay ends with its connection."""


@dataclass
class Answer:
    status: int
    body: Any


class Actor:
    """Requests as one real unix user through the relay (connections reused)."""

    def __init__(self, daemon: Daemon, user: UnixUser) -> None:
        self.user = user
        self.http = httpx.Client(transport=BackendTransport(DialStdioAs(daemon, user),
                                                            max_connections=4),
                                 base_url="http://nai", timeout=30)

    def __call__(self, method: str, path: str, body: Any = None) -> Answer:
        r = self.http.request(method, path, json=body)
        return Answer(r.status_code, r.json() if "json" in r.headers.get(
            "content-type", "") else r.content)


def upload_tree(daemon: Daemon, files: dict[str, bytes], by: Actor | None = None) -> str:
    """Blobs and tree sent by `by`, or as root straight to the socket (setup, not under
    test). A tree is readable only by who sent it (or may read it otherwise)."""
    with daemon.client() if by is None else contextlib.nullcontext(by.http) as http:
        return testing.upload_tree(http, files)


def may_read(actor: str, entry: str) -> bool:
    by_group, shared = ENTRIES[entry]
    return (shared or actor in ("owner", "admin")) or (by_group and actor == "member")


def may_write(actor: str, entry: str) -> bool:
    by_group, _ = ENTRIES[entry]
    return actor in ("owner", "admin") or (by_group and actor == "member")


def expected(actor: str, entry: str, ok: int) -> int:
    if may_write(actor, entry):
        return ok
    return 403 if may_read(actor, entry) else 404


@pytest.fixture
def people(daemon: Daemon, make_user) -> Iterator[dict[str, Actor]]:
    users = {actor: make_user() for actor in ACTORS}
    with daemon.client() as root:  # set-up as root, an admin: faster than nai-admin
        for user in users.values():
            assert root.post("/v1/users", json={"name": user.name}).status_code == 201
        assert root.post("/v1/groups", json={"name": "lab"}).status_code == 201
        for group, actor in (("lab", "owner"), ("lab", "member"), ("admins", "admin")):
            added = root.post(f"/v1/groups/{group}/members", json={"user": users[actor].name})
            assert added.status_code == 201
    actors = {name: Actor(daemon, user) for name, user in users.items()}
    yield actors
    for actor in actors.values():
        actor.http.close()


@pytest.mark.parametrize("kind", ["datasets", "models"])
def test_access_matrix(daemon: Daemon, people: dict[str, Actor], kind: str) -> None:
    owner = people["owner"]
    first = upload_tree(daemon, {"weights.bin": b"\x01" * 4096, "README": kind.encode()}, owner)
    second = upload_tree(daemon, {"weights.bin": b"\x02" * 4096}, owner)
    for name, (by_group, shared) in ENTRIES.items():
        body = {"name": name, "tree_id": first, "shared": shared,
                "group": "lab" if by_group else None}
        made = owner("POST", f"/v1/{kind}", body)
        assert made.status == 201, made.body
        assert made.body["owner"] == (
            {"group": "lab"} if by_group else {"user": owner.user.name})
    # A version for each (entry, actor) to try removing: set up by root, an admin.
    doomed: dict[tuple[str, str], int] = {}
    with daemon.client() as root:
        for name in ENTRIES:
            for actor in ACTORS:
                # the same files each time: allow_same, or only the first makes a version
                pushed = root.post(f"/v1/{kind}/{name}/versions",
                                   json={"tree_id": second, "allow_same": True})
                doomed[name, actor] = pushed.json()["version"]
    nowhere = people["other"]("GET", f"/v1/{kind}/no-such-thing").body

    def cell(op: str, actor: str, name: str) -> tuple[str, str, str, int, Any]:
        call = people[actor]
        if op == "show":
            r = call("GET", f"/v1/{kind}/{name}")
        elif op == "pull":
            r = call("GET", f"/v1/{kind}/{name}/versions/1")
            if r.status == 200:  # and the files themselves come down
                tar = call("GET", f"/v1/trees/{r.body['tree_id']}/archive")
                assert tar.status == 200 and b"\x01" * 4096 in tar.body
        elif op == "push":
            r = call("POST", f"/v1/{kind}/{name}/versions",
                     {"tree_id": second, "allow_same": True})
        elif op == "share":  # the current setting again: allowed or not, nothing changes
            r = call("PUT", f"/v1/{kind}/{name}/sharing", {"shared": ENTRIES[name][1]})
        else:
            r = call("DELETE", f"/v1/{kind}/{name}/versions/{doomed[name, actor]}")
        return op, actor, name, r.status, r.body

    ops = ("show", "pull", "push", "share", "remove")
    jobs = [(op, actor, name) for op in ops for actor in ACTORS for name in ENTRIES]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda args: cell(*args), jobs))
    listings = {a: people[a]("GET", f"/v1/{kind}") for a in ACTORS}

    wrong = []
    for op, actor, name, status, body in results:
        want = {"show": 200 if may_read(actor, name) else 404,
                "pull": 200 if may_read(actor, name) else 404,
                "push": expected(actor, name, 201), "share": expected(actor, name, 200),
                "remove": expected(actor, name, 200)}[op]
        if status != want:
            wrong.append(f"{op} {name} as {actor}: {status}, expected {want}: {body}")
        elif status == 403:
            writers = "members of group 'lab'" if ENTRIES[name][0] else owner.user.name
            assert f"only {writers} and admins may" in body["error"]["message"], body
        elif status == 404:  # no hint that it exists
            message = body["error"]["message"]
            assert message == nowhere["error"]["message"].replace("no-such-thing", name)
        elif op == "remove":
            assert body["removed"] == [doomed[name, actor]], body
    for actor, listing in listings.items():
        assert listing.status == 200
        seen = {e["name"] for e in listing.body}
        want_seen = {n for n in ENTRIES if may_read(actor, n)}
        if seen != want_seen:
            wrong.append(f"list as {actor}: {sorted(seen)}, expected {sorted(want_seen)}")
    assert not wrong, "\n".join(wrong)

    # What the allowed cells did is visible: pushes by those who may, removals gone.
    with daemon.client() as root:
        for name in ENTRIES:
            versions = root.get(f"/v1/{kind}/{name}").json()["versions"]
            pushers = {v["created_by"] for v in versions if v["version"] > 1 + len(ACTORS)}
            assert pushers == {people[a].user.name for a in ACTORS if may_write(a, name)}, name
            left = {v["version"] for v in versions}
            for actor in ACTORS:
                assert (doomed[name, actor] in left) is not may_write(actor, name)


def test_group_sharing_and_ownership_rules(daemon: Daemon, people: dict[str, Actor]) -> None:
    owner, other, member = people["owner"], people["other"], people["member"]
    tree = upload_tree(daemon, {"a.txt": b"a"}, owner)
    assert daemon.admin("group", "add", "friends").returncode == 0
    assert daemon.admin("group", "add-member", "friends", other.user.name).returncode == 0

    # Only members (or admins) may make a group the owner.
    refused = other("POST", "/v1/datasets",
                             {"name": "x", "tree_id": tree, "group": "lab"})
    assert refused.status == 403 and "not a member of group 'lab'" in refused.body[
        "error"]["message"]
    assert owner("POST", "/v1/datasets",
                          {"name": "x", "tree_id": tree}).status == 201
    # The name is taken for everyone, readable or not.
    taken = member("POST", "/v1/datasets", {"name": "x", "tree_id": tree})
    assert taken.status == 409 and "choose another name" in taken.body["error"]["message"]

    # Shared with a group: its members read, they do not write; others still do not read.
    shared = owner("PUT", "/v1/datasets/x/sharing", {"groups": ["friends"]})
    assert shared.status == 200 and shared.body["shared_with_groups"] == ["friends"]
    assert other("GET", "/v1/datasets/x").status == 200
    assert other("DELETE", "/v1/datasets/x").status == 403
    assert member("GET", "/v1/datasets/x").status == 404
    assert owner("PUT", "/v1/datasets/x/sharing", {}).status == 200
    assert other("GET", "/v1/datasets/x").status == 404

    # An admin may remove anything; the answer says what went.
    gone = people["admin"]("DELETE", "/v1/datasets/x")
    assert gone.status == 200 and gone.body["entry_removed"] is True
