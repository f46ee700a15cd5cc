"""Collecting outputs a batch at a time: no blob under its digest before its bytes are
durable, the tree recorded only after every blob it names is, and a crash between a
batch's sync and its publish leaves only whole blobs behind."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from nai_server.core.trees import Limits, TreeError
from nai_server.host import outputs
from nai_server.host.outputs import RunAs, collect
from nai_server.store.blobs import BlobStore
from nai_server.store.pack import BlobSink
from nai_server.store.verify import StoreVerifier

LIMITS = Limits(max_file_size=1 << 20, max_entries=100, max_total_size=4 << 20)
BIG = Limits(max_file_size=4 << 20, max_entries=100, max_total_size=16 << 20)
FILES = {f"part{i}.bin": bytes([i]) * (1000 + i) for i in range(5)}


class Crash(BaseException):
    """The daemon dies here: nothing after it runs, no cleanup either."""


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


@pytest.fixture
def output(tmp_path: Path) -> Path:
    out = tmp_path / "output"
    out.mkdir()
    for rel, data in FILES.items():
        (out / rel).write_bytes(data)
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_blobs(store: BlobStore) -> list[str]:
    return sorted(p.parent.name + p.name for p in (store.root / "sha256").glob("*/*"))


def test_each_batch_is_durable_before_its_blobs_appear_and_the_tree_comes_last(
        store: BlobStore, output: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "BATCH_FILES", 2)
    events: list[tuple[str, object]] = []
    real_seal, real_sync = BlobSink.seal, BlobStore.sync
    real_publish, real_put_tree = BlobStore.publish, BlobStore.put_tree

    def seal(self: BlobSink, *, sync: bool = True) -> None:
        events.append(("seal", (self.path, sync)))
        real_seal(self, sync=sync)

    def sync(self: BlobStore) -> None:
        events.append(("sync", None))
        real_sync(self)

    def publish(self: BlobStore, sinks: list) -> None:  # type: ignore[type-arg]
        events.append(("publish", [sink.path for sink, _ in sinks]))
        real_publish(self, sinks)

    def put_tree(self: BlobStore, entries):  # type: ignore[no-untyped-def]
        events.append(("tree", None))
        return real_put_tree(self, entries)

    monkeypatch.setattr(BlobSink, "seal", seal)
    monkeypatch.setattr(BlobStore, "sync", sync)
    monkeypatch.setattr(BlobStore, "publish", publish)
    monkeypatch.setattr(BlobStore, "put_tree", put_tree)
    tree = collect(store, output, LIMITS, RunAs(), 60)

    assert {e.path: e.sha256 for e in store.get_tree(tree)} == {
        rel: sha(data) for rel, data in FILES.items()}
    assert list((store.root / "tmp").iterdir()) == []
    published = [paths for what, paths in events if what == "publish"]
    assert [len(paths) for paths in published] == [2, 2, 1]  # type: ignore[arg-type]
    tree_at = events.index(("tree", None))
    # No fsync per file: one sync per batch does it (the tree's own file aside).
    assert [detail[1] for what, detail in events[:tree_at]  # type: ignore[index]
            if what == "seal"] == [False] * len(FILES)
    for index, (what, paths) in enumerate(events):
        if what != "publish":
            continue
        for path in paths:  # type: ignore[attr-defined]
            sealed = next(i for i, (w, d) in enumerate(events)
                          if w == "seal" and d[0] == path)  # type: ignore[index]
            assert any(events[i][0] == "sync" for i in range(sealed, index)), path
    last_publish = max(i for i, (what, _) in enumerate(events) if what == "publish")
    assert any(events[i][0] == "sync" for i in range(last_publish, tree_at))


def test_a_crash_between_a_batch_sync_and_its_publish_leaves_only_whole_blobs(
        store: BlobStore, output: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "BATCH_FILES", 2)
    real_publish = BlobStore.publish
    batches = []

    def publish(self: BlobStore, sinks: list) -> None:  # type: ignore[type-arg]
        batches.append(sinks)
        if len(batches) == 2:  # the second batch is synced, not yet in place
            raise Crash
        real_publish(self, sinks)

    monkeypatch.setattr(BlobStore, "publish", publish)
    monkeypatch.setattr(BlobSink, "discard", lambda self: None)  # a crash cleans nothing
    with pytest.raises(Crash):
        collect(store, output, LIMITS, RunAs(), 60)
    monkeypatch.undo()

    first = sorted(sha(FILES[f"part{i}.bin"]) for i in range(2))
    assert stored_blobs(store) == first  # the crashed batch is in tmp/ only
    assert len(list((store.root / "tmp").iterdir())) == 2
    assert list((store.root / "trees").iterdir()) == []  # no tree names a missing blob
    report = StoreVerifier(store, lambda: ([], []), rate=0).run(repair=False)
    assert report["clean"] and report["blobs_checked"] == 2, report

    store.clean_tmp()  # what the daemon does when it starts again
    tree = collect(store, output, LIMITS, RunAs(), 60)
    assert stored_blobs(store) == sorted(sha(data) for data in FILES.values())
    assert [e.path for e in store.get_tree(tree)] == sorted(FILES)
    assert StoreVerifier(store, lambda: ([], []), rate=0).run(repair=False)["clean"]


def test_a_refused_file_mid_batch_leaves_no_temp_file_and_no_tree(
        store: BlobStore, output: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "BATCH_FILES", 2)
    # A file past the limit once read (one that grew after the listing was checked),
    # while an earlier file of its batch waits in tmp/: refused, and the batch dropped.
    real_add = outputs._Batch.add

    def add(self, src, limit, name):  # type: ignore[no-untyped-def]
        if name == "part3.bin":
            limit = 500
        return real_add(self, src, limit, name)

    monkeypatch.setattr(outputs._Batch, "add", add)
    with pytest.raises(TreeError, match="file grew past the limit of 500 bytes") as caught:
        collect(store, output, LIMITS, RunAs(), 60)
    assert caught.value.path == "part3.bin"
    assert list((store.root / "tmp").iterdir()) == []
    assert list((store.root / "trees").iterdir()) == []
    # Only the first batch, published before the refusal, whole.
    assert stored_blobs(store) == sorted(sha(FILES[f"part{i}.bin"]) for i in range(2))


def test_outputs_already_stored_are_kept_and_synced_once_before_the_tree(
        store: BlobStore, output: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = collect(store, output, LIMITS, RunAs(), 60)
    inodes = {d: os.stat(store.blob_path(d)).st_ino for d in stored_blobs(store)}
    events: list[str] = []
    real_sync, real_put_tree = BlobStore.sync, BlobStore.put_tree

    def sync(self: BlobStore) -> None:
        events.append("sync")
        real_sync(self)

    def put_tree(self: BlobStore, entries):  # type: ignore[no-untyped-def]
        events.append("tree")
        return real_put_tree(self, entries)

    monkeypatch.setattr(BlobStore, "sync", sync)
    monkeypatch.setattr(BlobStore, "publish", lambda self, sinks: pytest.fail("published"))
    monkeypatch.setattr(BlobStore, "put_tree", put_tree)
    assert collect(store, output, LIMITS, RunAs(), 60) == first
    # The blobs there are kept; one sync covers names that a collection or upload beside
    # this one may have given them a moment ago, before the tree names them.
    assert {d: os.stat(store.blob_path(d)).st_ino for d in stored_blobs(store)} == inodes
    assert events == ["sync", "tree"]
    assert list((store.root / "tmp").iterdir()) == []


def test_small_files_the_store_holds_make_no_temp_file_and_new_ones_still_do(
        store: BlobStore, output: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = collect(store, output, LIMITS, RunAs(), 60)
    (output / "part0.bin").write_bytes(b"changed since")  # one file new to the store
    big = bytes(range(256)) * ((outputs.SMALL_FILE + 5000) // 256)  # read in two parts
    (output / "big.bin").write_bytes(big)
    collect(store, output, BIG, RunAs(), 60)
    made: list[BlobSink] = []
    real_new_sink = BlobStore.new_sink

    def spy(self: BlobStore, *, hash_only: bool = False) -> BlobSink:
        made.append(real_new_sink(self, hash_only=hash_only))
        return made[-1]

    monkeypatch.setattr(BlobStore, "new_sink", spy)
    (output / "part1.bin").write_bytes(b"new again")
    tree = collect(store, output, BIG, RunAs(), 60)

    assert len(made) == 2  # part1.bin (new) and big.bin (read past the small size)
    assert {e.path: e.sha256 for e in store.get_tree(tree)} == {
        **{rel: sha(data) for rel, data in FILES.items()}, "part0.bin": sha(b"changed since"),
        "part1.bin": sha(b"new again"), "big.bin": sha(big)}
    assert first != tree
    assert not list(store.root.glob("tmp/*"))
