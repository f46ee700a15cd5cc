"""Blob store: packed uploads, trees, tar downloads, ingest and materialise, on a real disk."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from nai_server.core.trees import (
    UNNAMED_BLOB,
    Entry,
    Limits,
    TreeError,
    diff_missing,
    parse_manifest,
)
from nai_server.host.outputs import RunAs, collect
from nai_server.store.blobs import (
    BlobStore,
    MissingBlobs,
    PackError,
    TreeNotFound,
)
from nai_server.store.pack import BlobSink

LIMITS = Limits(max_file_size=1 << 20, max_entries=100, max_total_size=4 << 20)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(members: list[tuple[str, bytes]]) -> bytes:
    """A packed upload as a client makes it: ustar, members named by digest."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def upload(store: BlobStore, stream: bytes, chunk: int = 777) -> list[str]:
    with store.receiver(max_blob_size=1 << 20) as rx:
        for i in range(0, len(stream), chunk):
            rx.feed(stream[i : i + chunk])
        return rx.finish()


def temp_files(store: BlobStore) -> list[Path]:
    return list((store.root / "tmp").iterdir())


FILES = {
    "train.py": (b"print('hi')\n", 0o755),
    "pkg/model.py": (b"x = 1\n" * 500, 0o644),
    "pkg/empty": (b"", 0o600),
    "data/big.bin": (bytes(range(256)) * 2000, 0o644),
    "data/copy.bin": (bytes(range(256)) * 2000, 0o644),  # same blob as big.bin
}


def manifest() -> tuple[Entry, ...]:
    raw: list[dict[str, object]] = [
        {"path": p, "size": len(d), "mode": m, "sha256": sha(d)} for p, (d, m) in FILES.items()
    ]
    raw.append({"path": "latest", "kind": "symlink", "target": "data/big.bin"})
    return parse_manifest(raw, LIMITS)


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def test_upload_then_download_is_byte_identical(store: BlobStore, tmp_path: Path) -> None:
    entries = manifest()
    wanted = store.missing(e.sha256 for e in entries if e.kind == "file")
    assert len(wanted) == 4  # the duplicate file is asked for once
    blobs = {sha(d): d for d, _ in FILES.values()}
    assert upload(store, pack([(d, blobs[d]) for d in wanted])) == wanted
    tree = store.put_tree(entries)
    assert store.get_tree(tree) == tuple(sorted(entries, key=lambda e: e.path))

    with tarfile.open(fileobj=io.BytesIO(b"".join(store.iter_tar(tree))), mode="r|") as tar:
        tar.extractall(tmp_path / "out", filter="data")
    for path, (data, mode) in FILES.items():
        assert (tmp_path / "out" / path).read_bytes() == data
        assert (tmp_path / "out" / path).stat().st_mode & 0o111 == mode & 0o111
    assert os.readlink(tmp_path / "out" / "latest") == "data/big.bin"


def test_byte_by_byte_feeding_and_already_stored_blobs(store: BlobStore) -> None:
    data = b"abc" * 300
    store.put_bytes(data)
    stream = pack([(sha(b"z"), b"z"), (sha(data), data), (sha(b""), b"")])
    assert upload(store, stream, chunk=1) == [sha(b"z"), sha(data), sha(b"")]
    assert store.missing([sha(b"z"), sha(data), sha(b"")]) == []


def test_a_corrupt_blob_is_refused_and_not_stored(store: BlobStore) -> None:
    good, claimed = b"good", sha(b"what the manifest said")
    with pytest.raises(PackError, match=f"blob {claimed}: content hashes to {sha(b'evil')}"):
        upload(store, pack([(sha(good), good), (claimed, b"evil")]))
    assert store.has(sha(good))
    assert not store.has(claimed)
    assert not store.has(sha(b"evil"))
    assert temp_files(store) == []


def test_an_interrupted_upload_keeps_whole_blobs_only(store: BlobStore) -> None:
    entries = manifest()
    blobs = {sha(d): d for d, _ in FILES.values()}
    order = diff_missing(entries, store.has)
    stream = pack([(d, blobs[d]) for d in order])
    cut = len(stream) - 300_000  # inside the last, largest blob
    rx = store.receiver(max_blob_size=1 << 20)
    rx.feed(stream[:cut])
    assert temp_files(store)  # the partial blob is being written...
    rx.abort()
    assert temp_files(store) == []  # ...and is gone, not stored under its name
    assert store.missing(order) == order[3:]
    with pytest.raises(MissingBlobs) as caught:
        store.put_tree(entries)
    assert caught.value.digests == order[3:]
    assert list((store.root / "trees").iterdir()) == []  # nothing registered

    assert upload(store, pack([(d, blobs[d]) for d in store.missing(order)])) == order[3:]
    assert store.has_tree(store.put_tree(entries))


def test_a_truncated_stream_fails_at_finish(store: BlobStore) -> None:
    stream = pack([(sha(b"a" * 2000), b"a" * 2000)])
    rx = store.receiver(max_blob_size=1 << 20)
    rx.feed(stream[:1200])
    with pytest.raises(PackError, match=r"ended inside blob \w+ \(688 of 2000 bytes\)"):
        rx.finish()
    assert temp_files(store) == []
    rx = store.receiver(max_blob_size=1 << 20)
    rx.feed(stream[: 512 + 2048])  # whole member, no end-of-archive marker
    with pytest.raises(PackError, match="without the end-of-archive marker"):
        rx.finish()
    assert store.has(sha(b"a" * 2000))


def test_an_unnamed_member_is_stored_under_what_it_hashes_to(store: BlobStore) -> None:
    new, old = b"weights " * 5000, b"already here"
    store.put_bytes(old)
    stream = pack([(UNNAMED_BLOB, new), (sha(b"z"), b"z"), (UNNAMED_BLOB, old)])
    assert upload(store, stream) == [sha(new), sha(b"z"), sha(old)]
    assert store.open(sha(new)).read() == new
    assert store.missing([sha(new), sha(old)]) == []
    assert temp_files(store) == []  # the copy of what was already stored is dropped

    cut = pack([(UNNAMED_BLOB, b"never whole" * 100)])[:800]
    rx = store.receiver(max_blob_size=1 << 20)
    rx.feed(cut)
    rx.abort()
    assert store.missing([sha(b"never whole" * 100)]) != []
    assert temp_files(store) == []


def test_bad_members_are_refused(store: BlobStore) -> None:
    with pytest.raises(PackError, match="not named by its sha256"):
        upload(store, pack([("../etc/passwd", b"x")]))
    with pytest.raises(PackError, match="is 11 bytes, the limit is 10"):
        rx = store.receiver(max_blob_size=10)
        rx.feed(pack([(sha(b"x" * 11), b"x" * 11)]))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(sha(b"x"))
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(info)
    with pytest.raises(PackError, match="not a regular file"):
        upload(store, out.getvalue())
    with pytest.raises(PackError, match="bad tar header"):
        upload(store, b"\x01" * 1024)
    assert temp_files(store) == []


def test_put_tree_refuses_traversal_and_wrong_sizes(store: BlobStore) -> None:
    digest = store.put_bytes(b"data")
    with pytest.raises(TreeError) as caught:
        store.put_tree([Entry("../escape", "file", 4, 0o644, digest)])
    assert caught.value.path == "../escape"
    with pytest.raises(TreeError, match="size says 99 bytes but the blob holds 4"):
        store.put_tree([Entry("f", "file", 99, 0o644, digest)])
    assert list((store.root / "trees").iterdir()) == []


def test_stored_files_are_read_only(store: BlobStore) -> None:
    digest = store.put_bytes(b"payload")
    tree = store.put_tree([Entry("f", "file", 7, 0o644, digest)])
    assert stat.S_IMODE(store.path_of(digest).stat().st_mode) == 0o444
    tree_file = store.root / "trees" / tree[:2] / f"{tree[2:]}.json"
    assert stat.S_IMODE(tree_file.stat().st_mode) == 0o444
    assert store.path_of(digest) == store.root / "sha256" / digest[:2] / digest[2:]


def test_missing_validates_digests(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="'ABC'"):
        store.missing(["a" * 64, "ABC"])
    with pytest.raises(TreeNotFound):
        store.get_tree("b" * 64)


def test_iter_tar_of_a_part(store: BlobStore) -> None:
    entries = manifest()
    for data, _ in FILES.values():
        store.put_bytes(data)
    tree = store.put_tree(entries)
    with tarfile.open(fileobj=io.BytesIO(b"".join(store.iter_tar(tree, "pkg"))), mode="r|") as t:
        assert sorted(m.name for m in t) == ["pkg/empty", "pkg/model.py"]
    with pytest.raises(TreeNotFound):
        store.iter_tar(tree, "nothing/here")


def make_output_dir(root: Path) -> None:
    (root / "ckpt").mkdir(parents=True)
    (root / "ckpt" / "model.pt").write_bytes(b"weights" * 1000)
    (root / "run.sh").write_bytes(b"#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "best").symlink_to("ckpt/model.pt")
    os.mkfifo(root / "pipe")  # special files are skipped, not stored


def test_ingest_then_materialise_by_link_and_copy(store: BlobStore, tmp_path: Path) -> None:
    make_output_dir(tmp_path / "output")
    tree = collect(store, tmp_path / "output", LIMITS, RunAs(), 60)
    assert [e.path for e in store.get_tree(tree)] == ["best", "ckpt/model.pt", "run.sh"]
    assert stat.S_IMODE((tmp_path / "output" / "run.sh").stat().st_mode) == 0o755  # untouched

    linked = tmp_path / "dataset"
    store.materialise(tree, linked, link=True)
    model = linked / "ckpt" / "model.pt"
    assert model.read_bytes() == b"weights" * 1000
    assert model.stat().st_ino == store.path_of(sha(b"weights" * 1000)).stat().st_ino
    assert stat.S_IMODE((linked / "run.sh").stat().st_mode) == 0o555  # executable: a copy
    assert os.readlink(linked / "best") == "ckpt/model.pt"

    copied = tmp_path / "code"
    store.materialise(tree, copied, link=False)
    assert stat.S_IMODE((copied / "ckpt" / "model.pt").stat().st_mode) == 0o644
    assert stat.S_IMODE((copied / "run.sh").stat().st_mode) == 0o755
    assert (copied / "ckpt" / "model.pt").stat().st_ino != model.stat().st_ino
    with pytest.raises(FileExistsError):
        store.materialise(tree, copied, link=False)


def test_ingest_refuses_escaping_links_and_big_files_before_copying(
    store: BlobStore, tmp_path: Path
) -> None:
    out = tmp_path / "output"
    out.mkdir()
    (out / "a.bin").write_bytes(b"a" * 100)
    (out / "secrets").symlink_to("/etc")
    with pytest.raises(TreeError, match="symlink leaves the tree") as caught:
        collect(store, out, LIMITS, RunAs(), 60)
    assert caught.value.path == "secrets"
    (out / "secrets").unlink()
    (out / "huge.bin").write_bytes(b"h" * 200)
    with pytest.raises(TreeError, match=re.escape("huge.bin: file is 200 B, the limit is 150 B")):
        collect(store, out, Limits(max_file_size=150, max_entries=10, max_total_size=1000),
                RunAs(), 60)
    assert list((store.root / "sha256").iterdir()) == []  # refused before anything was copied


def test_full_batches_are_made_durable_while_the_next_arrives(
        store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # A thread waits out each full batch's syncfs while the next batch arrives; the
    # receiving thread renames a batch into place only once a syncfs begun after its
    # last byte was written is over, and makes the last names durable before it ends.
    from nai_server.store import pack as pack_module

    monkeypatch.setattr(pack_module, "FLUSH_BLOBS", 2)
    events: list[tuple[str, str, object]] = []
    real_seal, real_sync, real_publish = BlobSink.seal, BlobStore.sync, BlobStore.publish

    def log(what: str, detail: object = None) -> None:
        events.append((what, threading.current_thread().name, detail))

    def seal(self: BlobSink, *, sync: bool = True) -> None:
        log("seal", self.path)
        real_seal(self, sync=sync)

    def sync(self: BlobStore) -> None:
        log("sync begins")
        real_sync(self)
        log("sync ends")

    def publish(self: BlobStore, sinks: list) -> None:  # type: ignore[type-arg]
        log("publish", [(sink.path, os.path.basename(final)) for sink, final in sinks])
        real_publish(self, sinks)

    monkeypatch.setattr(BlobSink, "seal", seal)
    monkeypatch.setattr(BlobStore, "sync", sync)
    monkeypatch.setattr(BlobStore, "publish", publish)
    blobs = [bytes([i]) * (1000 + i) for i in range(5)]
    stored = upload(store, pack([(sha(b), b) for b in blobs]))
    assert stored == [sha(b) for b in blobs]
    assert all(store.has(sha(b)) for b in blobs) and temp_files(store) == []
    me = threading.current_thread().name
    published = [detail for what, _, detail in events if what == "publish"]
    assert [len(batch) for batch in published] == [2, 2, 1]  # type: ignore[arg-type]
    assert {who for what, who, _ in events if what in ("seal", "publish")} == {me}
    assert {who for what, who, _ in events if what == "sync begins"} == {"nai-blob-sync", me}
    for index, (what, _, detail) in enumerate(events):
        if what != "publish":
            continue
        for path, _ in detail:  # type: ignore[attr-defined]
            sealed = events.index(("seal", me, path))
            begun = [i for i in range(sealed, index) if events[i][0] == "sync begins"]
            assert begun and any(events[i][0] == "sync ends" for i in range(begun[0], index))
    last_publish = max(i for i, e in enumerate(events) if e[0] == "publish")
    assert ("sync ends", me, None) in events[last_publish:]  # the last names are durable


def test_a_failed_sync_fails_the_upload_and_stores_nothing_it_covered(
        store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from nai_server.store import pack as pack_module

    monkeypatch.setattr(pack_module, "FLUSH_BLOBS", 2)

    def full_disk(self: BlobStore) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(BlobStore, "sync", full_disk)
    blobs = [bytes([i]) * 100 for i in range(5)]
    with pytest.raises(OSError, match="No space left"):
        upload(store, pack([(sha(b), b) for b in blobs]))
    assert not any(store.has(sha(b)) for b in blobs) and temp_files(store) == []


def test_put_tree_checks_each_blob_once_and_names_every_missing_one(store: BlobStore) -> None:
    entries = manifest()
    blobs = {sha(d): d for d, _ in FILES.values()}
    with pytest.raises(MissingBlobs) as caught:
        store.put_tree(entries)
    assert caught.value.digests == list(blobs)  # unique, in manifest order
    upload(store, pack(list(blobs.items())))
    assert store.has_tree(store.put_tree(entries))
