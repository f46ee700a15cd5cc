"""BlobStore keeps the last trees it read parsed (trees never change once recorded),
within PARSED_ENTRIES entries; a tree larger than that is never kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from nai_server.core.trees import UNLIMITED, parse_manifest
from nai_server.store import blobs as blobs_module
from nai_server.store.blobs import BlobStore


def tree(store: BlobStore, files: int, tag: str) -> str:
    entries = [{"path": f"f{i}", "size": len(data), "sha256": store.put_bytes(data),
                "mode": 0o644} for i, data in enumerate(f"{tag}{n}".encode()
                                                        for n in range(files))]
    return store.put_tree(parse_manifest(entries, UNLIMITED))


def test_trees_read_again_are_not_parsed_again_within_the_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobs_module, "PARSED_ENTRIES", 5)
    store = BlobStore(tmp_path / "store")
    small, other, big = tree(store, 2, "a"), tree(store, 3, "b"), tree(store, 6, "c")
    parses: list[int] = []
    real = blobs_module.parse_manifest
    monkeypatch.setattr(blobs_module, "parse_manifest",
                        lambda raw, limits: parses.append(len(raw)) or real(raw, limits))
    store._parsed.clear()
    first = store.get_tree(small)
    assert store.get_tree(small) is first and parses == [2]
    store.get_tree(other)
    store.get_tree(small)
    assert parses == [2, 3]  # both kept: 5 entries
    store.get_tree(big)
    store.get_tree(big)
    assert parses == [2, 3, 6, 6]  # never kept: larger than the bound
    store.get_tree(tree(store, 1, "d"))  # 6 entries with it: the least recent goes
    store.get_tree(small)
    store.get_tree(other)
    assert parses[-1] == 3 and parses.count(2) == 1
