"""Packs as the client builds them: members whole at any chunk boundary, files read
or given in memory, hashed only when the cache cannot vouch for them, ustar headers
as tarfile writes them."""

from __future__ import annotations

import io
import tarfile
from hashlib import sha256
from pathlib import Path

import pytest
from sync_kit import MiB, noise, write

from nai_tui.sync import packing
from nai_tui.sync.hashcache import HashCache
from nai_tui.sync.push import scan


def test_packing_hashes_only_what_the_cache_cannot_vouch_for(
        project: Path, cache: HashCache, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = scan(project, cache=cache)
    blobs = [(e["sha256"], project / e["path"], e["size"], None) for e in entries
             if e["kind"] == "file"]
    hashed: list[int] = []
    real_sha256 = packing.hashlib.sha256

    class Counting:
        def __init__(self) -> None:
            self.inner = real_sha256()

        def update(self, data: bytes) -> None:
            hashed.append(len(data))
            self.inner.update(data)

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    monkeypatch.setattr(packing.hashlib, "sha256", Counting)
    packed = b"".join(packing.pack_blobs(blobs, cache=cache))
    assert hashed == []  # every file was hashed by the scan and has not changed since
    assert b"".join(packing.pack_blobs(blobs)) == packed  # without a cache: hashed, same bytes
    assert sum(hashed) == sum(size for _, _, size, _ in blobs)


@pytest.mark.parametrize("first", [MiB - 1024, MiB - 512, MiB, 2 * MiB + 512, 4096])
@pytest.mark.parametrize("in_memory", ["", "bd", "abcd"])
def test_packs_are_whole_wherever_a_member_meets_a_chunk_boundary(tmp_path: Path, first: int,
                                                                  in_memory: str) -> None:
    # Members ending just short of, on, or past the 1 MiB chunk the pack is sent in; read
    # from their files or, for those named in `in_memory`, given as already read.
    files = {"a": noise(first, 1), "b": noise(100, 2), "c": noise(MiB + 7, 3), "d": b""}
    blobs = []
    for name, data in files.items():
        write(tmp_path, name, data)
        held = data if name in in_memory else None
        blobs.append((sha256(data).hexdigest(), tmp_path / name, len(data), held))
    pieces = list(packing.pack_blobs(blobs))
    # A chunk may end with one whole member given in memory (small ones, in a push).
    largest = max((packing.member_size(len(files[name])) for name in in_memory), default=512)
    assert all(len(p) <= MiB + largest for p in pieces)
    packed = b"".join(pieces)
    assert len(packed) == packing.pack_size(len(d) for d in files.values())
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert got == {sha256(d).hexdigest(): d for d in files.values()}


def test_blob_headers_match_tarfile() -> None:
    """The fast header builder writes what tarfile itself writes."""
    import tarfile

    for size in (0, 1, 511, 512, 4096, 10**9):
        digest = f"{size:064x}"
        info = tarfile.TarInfo(digest)
        info.size, info.mode, info.mtime = size, 0o444, 0
        assert packing.blob_header(digest, size) == info.tobuf(tarfile.USTAR_FORMAT)
