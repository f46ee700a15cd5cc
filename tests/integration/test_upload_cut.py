"""An upload cut off mid-stream, through the relay as a real user: nothing partial is
stored or registered, and the retry sends only what is missing."""

from __future__ import annotations

import hashlib
import os
import subprocess

from conftest import (  # type: ignore[import-not-found]
    BIN,
    Daemon,
    needs_root,
    post_as,
    wait_for,
)

from nai_server.testing import pack

pytestmark = [needs_root]


def test_cut_upload_through_dial_stdio(daemon: Daemon, make_user) -> None:
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    datas = [os.urandom(3 << 20) for _ in range(3)]
    blobs = {hashlib.sha256(d).hexdigest(): d for d in datas}
    stream = pack(blobs)
    head = (f"POST /v1/blobs HTTP/1.1\r\nHost: nai\r\nContent-Length: {len(stream)}\r\n"
            f"Content-Type: application/x-tar\r\n\r\n").encode()
    # The client vanishes after 60% of the body: the relay sees EOF and half-closes.
    cut = head + stream[: int(len(stream) * 0.6)]
    relay = subprocess.run(
        [str(BIN / "nai-server"), "dial-stdio", "--socket", str(daemon.socket)],
        input=cut, capture_output=True, timeout=30, user=alice.uid, group=alice.gid,
        extra_groups=[])
    assert relay.returncode == 0

    digests = list(blobs)

    def missing() -> list[str]:
        return daemon.as_user(alice, "POST", "/v1/blobs/missing", {"digests": digests}).json()[
            "missing"]

    # The first blob was complete (stored); the second was cut (never visible).
    wait_for(lambda: missing() == digests[1:], what="the complete blob to be kept")
    entries = [{"path": f"f{i}", "size": len(d), "mode": 0o644, "sha256": h}
               for i, (h, d) in enumerate(blobs.items())]
    refused = daemon.as_user(alice, "POST", "/v1/trees", {"entries": entries})
    assert refused.status == 409
    assert refused.json()["error"]["details"]["missing"] == digests[1:]
    assert not list((daemon.state / "blobs" / "tmp").iterdir())  # no partial leftovers

    retry = post_as(daemon, alice, "/v1/blobs", pack({h: blobs[h] for h in missing()}),
                    "application/x-tar")
    assert retry["stored"] == 2
    assert daemon.as_user(alice, "POST", "/v1/trees", {"entries": entries}).status == 201
