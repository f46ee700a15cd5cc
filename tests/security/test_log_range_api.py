"""The log pager's routes (a range of bytes, a search) through the real daemon as real
unix users: bounded whatever is asked, only for the job's readers, and never a way to
read what stands at the log's name when it is not the job's regular file."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from conftest import Daemon  # type: ignore[import-not-found]
from test_job_files import ended, registered, submit  # type: ignore[import-not-found]

from nai_server.protocol import MAX_LOG_RANGE

# ~1.4 MB: more than one range, and a search that crosses the server's chunks.
PRINTS = ("printf 'needle at the start\\n'; i=0; while [ $i -lt 3 ]; do printf '\\r%d%%' $i; "
          "i=$((i+1)); done; echo; seq 1 200000; echo 'needle at the end'")


def test_ranges_and_search_are_bounded_and_for_readers_only(
        daemon: Daemon, make_user: Any) -> None:
    alice, bob = registered(daemon, make_user, 2)
    job = submit(daemon, alice, PRINTS)
    assert ended(daemon, alice, job)["state"] == "succeeded"
    log = (daemon.state / "jobs" / str(job) / "log").read_bytes()
    url = f"/v1/jobs/{job}/logs"

    first = daemon.as_user(alice, "GET", f"{url}/range?offset=0&length=19")
    assert first.status == 200 and first.body == b"needle at the start"
    assert int(first.headers["x-log-size"]) == len(log)
    middle = daemon.as_user(alice, "GET", f"{url}/range?offset=700000&length=100")
    assert middle.body == log[700000:700100]
    whole = daemon.as_user(alice, "GET", f"{url}/range?offset=0")  # the cap, by default
    assert whole.body == log[:MAX_LOG_RANGE]
    past = daemon.as_user(alice, "GET", f"{url}/range?offset={len(log) + 5}&length=10")
    assert past.status == 200 and past.body == b""
    for crafted in ("offset=-1", f"length={MAX_LOG_RANGE + 1}", "length=1099511627776",
                    "offset=99999999999999999999", "length=-5"):
        answer = daemon.as_user(alice, "GET", f"{url}/range?{crafted}")
        assert answer.status == 400, (crafted, answer.status)

    found = daemon.as_user(alice, "GET", f"{url}/search?q=NEEDLE").json()
    assert found["offsets"] == [0, log.index(b"needle at the end")]
    assert found["next"] is None and found["size"] == len(log)
    back = daemon.as_user(alice, "GET", f"{url}/search?q=needle&backward=true"
                                        f"&offset={len(log)}&limit=1").json()
    assert back["offsets"] == [log.index(b"needle at the end")] and back["next"] is not None
    # A pattern that would be catastrophic as a regular expression is plain text here.
    evil = daemon.as_user(alice, "GET", f"{url}/search?q=(1%2B)%2B%24").json()
    assert evil["offsets"] == []
    for crafted in ("q=", "q=" + "a" * 257, "q=a&limit=100000", "q=a&offset=-3"):
        assert daemon.as_user(alice, "GET", f"{url}/search?{crafted}").status == 400, crafted

    for path in (f"{url}/range?offset=0&length=10", f"{url}/search?q=needle"):
        assert daemon.as_user(bob, "GET", path).status == 403


def test_a_log_replaced_by_a_link_or_a_fifo_is_refused_not_read(
        daemon: Daemon, make_user: Any, tmp_path: Path) -> None:
    (alice,) = registered(daemon, make_user)
    job = submit(daemon, alice, "echo hello")
    ended(daemon, alice, job)
    log = daemon.state / "jobs" / str(job) / "log"
    url = f"/v1/jobs/{job}/logs"

    log.unlink()
    log.symlink_to("/etc/shadow")
    for path in (f"{url}/range?offset=0&length=100", f"{url}/search?q=root"):
        answer = daemon.as_user(alice, "GET", path)
        assert answer.status == 409 and b"root:" not in answer.body, answer.body

    log.unlink()
    os.mkfifo(log)
    # A writer that never writes: a reader that opened the FIFO would wait forever.
    holder = threading.Thread(target=lambda: os.close(os.open(log, os.O_RDWR)), daemon=True)
    holder.start()
    for path in (f"{url}/range?offset=0&length=100", f"{url}/search?q=x"):
        assert daemon.as_user(alice, "GET", path).status == 409
    assert daemon.as_user(alice, "GET", "/v1/version").status == 200
