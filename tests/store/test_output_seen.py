"""Passes over a job's output/ read only what changed since the last (output_seen.Seen): a
file is left out only when it is listed with the inode, ctime and size of bytes an
earlier pass stored once its ctime had settled, so any write since, even one that keeps
its size and puts its mtime back, has it read again."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nai_server.core.trees import Limits, TreeError
from nai_server.host import output_seen, output_walk, outputs
from nai_server.host.output_helpers import ForkServer
from nai_server.store.blobs import BlobStore
from nai_server.testing import wait_for

LIMITS = Limits(1 << 30, 10_000, 1 << 32)


@pytest.fixture(params=["forked", "helper"])
def forks(request: pytest.FixtureRequest) -> Iterator[ForkServer | None]:
    """Readers from the fork server, and helper processes of their own (its fallback)."""
    server = ForkServer(as_daemon=True) if request.param == "forked" else None
    yield server
    if server is not None:
        server.close()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files whose bytes the daemon received, by path."""
    got: list[str] = []
    add = outputs._Batch.add

    def counting(self: outputs._Batch, src: outputs._Frames, limit: int, name: str
                 ) -> tuple[str, int]:
        got.append(name)
        return add(self, src, limit, name)
    monkeypatch.setattr(outputs._Batch, "add", counting)
    return got


def settle(*paths: Path) -> None:
    """Until the files' ctimes are older than the readers' margin."""
    newest = max(p.stat().st_ctime_ns for p in paths)
    wait_for(lambda: time.time_ns() > newest + output_walk.SETTLE_NS + 10_000_000,
             timeout=5, step=lambda: time.sleep(0.01), what="ctimes to settle")


def tree_of(blobs: BlobStore, output: Path, forks: ForkServer | None,
            seen: output_seen.Seen | None = None) -> str:
    return outputs.collect(blobs, output, LIMITS, outputs.RunAs(), 30, None, forks, seen)


def make(output: Path, count: int) -> list[Path]:
    made = []
    for i in range(count):
        path = output / f"d{i % 3}" / f"f{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%05d" % i)
        made.append(path)
    return made


def test_a_second_pass_reads_nothing_unchanged(tmp_path: Path, forks: ForkServer | None,
                                               reads: list[str]) -> None:
    blobs, output = BlobStore(tmp_path / "blobs"), tmp_path / "output"
    files = make(output, 30)
    (output / "link").symlink_to("d0/f0.txt")
    settle(*files)
    seen = output_seen.Seen()
    outputs.store_ahead(blobs, output, LIMITS, outputs.RunAs(), 30, None, forks, seen)
    assert len(reads) == 30 and len(seen.files) == 30
    reads.clear()
    assert tree_of(blobs, output, forks, seen) == tree_of(blobs, output, forks)
    assert len(reads) == 30  # the full collection's, none of the first


def test_a_file_rewritten_with_its_size_and_mtime_kept_is_read_again(
        tmp_path: Path, forks: ForkServer | None, reads: list[str]) -> None:
    blobs, output = BlobStore(tmp_path / "blobs"), tmp_path / "output"
    files = make(output, 5)
    settle(*files)
    seen = output_seen.Seen()
    outputs.store_ahead(blobs, output, LIMITS, outputs.RunAs(), 30, None, forks, seen)
    reads.clear()
    was = files[1].stat()
    files[1].write_bytes(b"xxxxx")  # the same size
    os.utime(files[1], ns=(was.st_atime_ns, was.st_mtime_ns))  # and its mtime put back
    swapped = output / "new.txt"
    swapped.write_bytes(b"00002")  # the same size, bytes, mtime; another inode
    os.utime(swapped, ns=(was.st_atime_ns, files[2].stat().st_mtime_ns))
    os.replace(swapped, files[2])
    tree = tree_of(blobs, output, forks, seen)
    assert sorted(reads) == ["d1/f1.txt", "d2/f2.txt"]
    assert tree == tree_of(blobs, output, forks)
    entries = {e.path: e for e in blobs.get_tree(tree)}
    assert Path(blobs.blob_path(entries["d1/f1.txt"].sha256)).read_bytes() == b"xxxxx"


def test_a_file_still_settling_is_not_remembered(tmp_path: Path, forks: ForkServer | None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    blobs, output = BlobStore(tmp_path / "blobs"), tmp_path / "output"
    settled, fresh = make(output, 2)
    settle(settled)
    fresh.write_bytes(b"fresh")  # its ctime: now
    seen = output_seen.Seen()
    outputs.store_ahead(blobs, output, LIMITS, outputs.RunAs(), 30, None, forks, seen)
    # (a reader slower than the margin would find it settled: then it is remembered)
    if time.time_ns() - fresh.stat().st_ctime_ns < output_walk.SETTLE_NS:
        assert list(seen.files) == ["d0/f0.txt"]
    assert "d0/f0.txt" in seen.files


def test_settled_allows_for_the_clock_and_whole_second_stamps() -> None:
    now = 1_700_000_000_123_456_789

    def stat(ctime_ns: int) -> os.stat_result:
        return os.stat_result((0o100644, 1, 1, 1, 0, 0, 5, 0, 0, 0, 0.0, 0.0, 0.0,
                               0, 0, ctime_ns))
    assert output_walk.settled(stat(now - output_walk.SETTLE_NS - 1), now)
    assert not output_walk.settled(stat(now - output_walk.SETTLE_NS // 2), now)
    whole = now - now % 1_000_000_000 - 1_000_000_000  # a second ago, stamped in seconds
    assert not output_walk.settled(stat(whole), now)
    assert output_walk.settled(stat(whole - 2_000_000_000), now)


def test_a_blob_gone_from_the_store_is_read_again(tmp_path: Path, forks: ForkServer | None,
                                                  reads: list[str]) -> None:
    blobs, output = BlobStore(tmp_path / "blobs"), tmp_path / "output"
    files = make(output, 3)
    settle(*files)
    seen = output_seen.Seen()
    outputs.store_ahead(blobs, output, LIMITS, outputs.RunAs(), 30, None, forks, seen)
    digest = seen.files["d1/f1.txt"][3]
    os.unlink(blobs.blob_path(digest))  # as `nai-admin verify --repair` moves one aside
    reads.clear()
    tree = tree_of(blobs, output, forks, seen)
    assert "d1/f1.txt" in reads and blobs.has(digest)
    assert tree == tree_of(blobs, output, forks)


def test_a_pass_checks_counts_sizes_and_shape_before_it_stores_a_byte() -> None:
    limits = Limits(100, 3, 150)
    good = [{"path": "a", "kind": "file", "size": 100, "id": [1, 2]},
            {"path": "l", "kind": "symlink", "target": "a"}]
    output_seen.check_ahead(good, limits)
    with pytest.raises(TreeError, match="limit is 150"):
        output_seen.check_ahead([*good, {"path": "b", "kind": "file", "size": 51}], limits)
    with pytest.raises(TreeError, match="limit is 3"):
        output_seen.check_ahead([*good, *good], limits)
    for bad in ({"path": 1, "kind": "file", "size": 1}, {"path": "x", "kind": "dir"},
                {"path": "x", "kind": "file", "size": -1}, ["x"],
                {"path": "x", "kind": "file", "size": True}):
        with pytest.raises(TreeError, match="malformed"):
            output_seen.check_ahead([bad], limits)


def test_the_listing_is_written_as_json_writes_it(tmp_path: Path) -> None:
    make(tmp_path, 4)
    (tmp_path / "l\u00e9\udcff").symlink_to('a"b\\c')
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        found = output_walk.listing(fd, 100)
    finally:
        os.close(fd)
    written = output_walk._listing_json(found)
    assert written == output_walk._json({"entries": found})
    assert json.loads(written) == {"entries": found}
