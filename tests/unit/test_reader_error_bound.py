"""The output reader runs as the job's (or annotate session's) user, who may attach to
it (a process of theirs: ptrace, /proc/PID/mem) and make it say anything on its pipe.
Whatever its listing line calls an error becomes the collection's problem, stored in
the job's or the service's document and shown in listings: it is bounded there and
kept to one printable line, whatever the reader sent."""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from pathlib import Path

import pytest

from nai_server.core.trees import Limits, TreeError
from nai_server.host import outputs
from nai_server.store.blobs import BlobStore

LIMITS = Limits(max_file_size=1000, max_entries=10, max_total_size=2500)


def said(tmp_path: Path, line: bytes) -> str:
    read, write = os.pipe()
    sender = threading.Thread(target=lambda: (os.write(write, line), os.close(write)))
    sender.start()
    try:
        stream = outputs.DeadlineStream(read, time.monotonic() + 30)
        with pytest.raises(TreeError) as refused:
            outputs._receive(BlobStore(tmp_path / "blobs"), stream, LIMITS)
    finally:
        sender.join()
        os.close(read)
    return str(refused.value)


@pytest.mark.parametrize("error", ["x" * (4 << 20), "line one\nFAKE LOG LINE\x1b[2J" * 1000,
                                   ["a list"] * 100_000])
def test_a_readers_error_is_bounded_and_printable(tmp_path: Path, error: object) -> None:
    text = said(tmp_path, json.dumps({"error": error}).encode() + b"\n")
    assert len(text) <= 1200 and text.isprintable(), text[:200]


def test_a_listing_that_is_not_an_object_is_bounded(tmp_path: Path) -> None:
    text = said(tmp_path, json.dumps(["entry"] * 200_000).encode() + b"\n")
    assert len(text) <= 1200 and text.isprintable(), text[:200]


def test_a_files_error_frame_is_printable(tmp_path: Path) -> None:
    listing = {"entries": [{"path": "a.txt", "kind": "file", "size": 1, "mode": 0o100644}]}
    message = ("a.txt: gone\nFAKE LOG LINE\x1b[2J" * 100).encode()
    frames = struct.pack(">I", outputs.ERROR) + struct.pack(">I", len(message)) + message
    text = said(tmp_path, json.dumps(listing).encode() + b"\n" + frames)
    assert len(text) <= 1200 and text.isprintable() and "a.txt" in text, text[:200]


@pytest.mark.parametrize("line", [b"[" * 5000, b'{"error": ' + b"[" * 990 + b"]" * 990 + b"}"],
                         ids=["listing", "error"])
def test_a_listing_nested_without_end_is_refused_as_malformed(tmp_path: Path,
                                                              line: bytes) -> None:
    text = said(tmp_path, line + b"\n")  # json.loads: RecursionError, not a ValueError
    assert len(text) <= 1200 and text.isprintable(), text[:200]
