"""Who holds which blob: claims written by a packed upload as its blobs commit, read
per user; a large blob is skipped (hashed, not written) only for one who holds it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from nai_server.core.trees import Entry
from nai_server.store.blobs import BlobStore, PackError
from nai_server.store.claims import user_dir_name
from nai_server.store.pack import SKIP_CHECK_BYTES
from nai_server.testing import pack

SMALL = b"small blob\n"
LARGE = b"L" * (SKIP_CHECK_BYTES + 1)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def send(store: BlobStore, user: str, blobs: list[bytes], **kwargs: object) -> list[bool]:
    """Upload as `user`; for each blob, whether it was only hashed (not written)."""
    hashed_only: list[bool] = []
    receiver = store.receiver(2 * len(LARGE), user, **kwargs)  # type: ignore[arg-type]
    real_sink = store.new_sink

    def spy(*, hash_only: bool = False):  # type: ignore[no-untyped-def]
        hashed_only.append(hash_only)
        return real_sink(hash_only=hash_only)

    store.new_sink = spy  # type: ignore[method-assign]
    try:
        receiver.feed(pack({sha(b): b for b in blobs}))
        receiver.finish()
    finally:
        del store.new_sink
    return hashed_only


def test_an_upload_claims_its_blobs_for_the_sender(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    send(store, "alice", [SMALL, LARGE])
    assert store.missing_for("alice", [sha(SMALL), sha(LARGE)]) == []
    assert store.missing_for("bob", [sha(SMALL), sha(LARGE)]) == [sha(SMALL), sha(LARGE)]
    assert store.missing([sha(SMALL), sha(LARGE)]) == []
    send(store, "bob", [SMALL, LARGE])
    assert store.missing_for("bob", [sha(SMALL), sha(LARGE)]) == []


def test_a_large_blob_is_skipped_only_for_its_holder(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    assert send(store, "alice", [LARGE]) == [False]
    # Bob's upload of the same bytes takes as long as a new blob's: no timing hint.
    assert send(store, "bob", [LARGE]) == [False]
    assert send(store, "alice", [LARGE]) == [True]
    assert send(store, "carol", [LARGE], sees_all=True) == [True]  # an admin
    assert len([p for p in (tmp_path / "sha256").rglob("*") if p.is_file()]) == 1


def test_a_cut_upload_keeps_the_claims_of_what_arrived(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = pack({sha(SMALL): SMALL, sha(b"second"): b"second"})
    receiver = store.receiver(1 << 20, "alice")
    receiver.feed(data[:1536])  # the first blob whole, the second cut short
    with pytest.raises(PackError):
        receiver.finish()
    assert store.missing_for("alice", [sha(SMALL), sha(b"second")]) == [sha(b"second")]


def test_a_claim_without_its_blob_counts_as_missing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    send(store, "alice", [SMALL])
    store.path_of(sha(SMALL)).unlink()
    assert store.missing_for("alice", [sha(SMALL)]) == [sha(SMALL)]


def test_trees_are_claimed_apart_from_blobs(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.claims.record_tree("alice", sha(b"tree"))
    assert store.claims.has_tree("alice", sha(b"tree"))
    assert not store.claims.holds("alice", sha(b"tree"))
    assert not store.claims.has_tree("bob", sha(b"tree"))


@pytest.mark.parametrize("name", ["..", ".", "a/b", "", "é", "x" * 65])
def test_odd_user_names_stay_one_directory_below_the_claims(name: str) -> None:
    part = user_dir_name(name)
    assert "/" not in part and part not in ("", ".", "..") and part != name
    assert user_dir_name(part) != part  # no plain name is another's encoded form
    assert user_dir_name("alice") == "alice"


def test_recording_a_known_tree_again_keeps_the_first_and_no_temp_file(tmp_path: Path) -> None:
    """Recording a tree does the same work whether or not someone recorded it before
    (the time must not tell), and keeps the file there (its time dates the tree's tars)."""
    store = BlobStore(tmp_path)
    send(store, "alice", [SMALL])
    tree = [Entry(path="a.txt", kind="file", size=len(SMALL), mode=0o644, sha256=sha(SMALL))]
    tree_id = store.put_tree(tree)
    path = tmp_path / "trees" / tree_id[:2] / f"{tree_id[2:]}.json"
    before = path.stat()
    assert store.put_tree(tree) == tree_id
    assert path.stat().st_ino == before.st_ino and path.stat().st_mtime_ns == before.st_mtime_ns
    assert list((tmp_path / "tmp").iterdir()) == []
