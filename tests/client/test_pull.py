"""Pull: a tree written into a folder, fetching only what differs, written safely."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest
from sync_kit import MiB, noise, snapshot, write

from nai_server.protocol import ConnectionFailed, NaiError
from nai_tui.remote.client import ServerClient
from nai_tui.sync import pull as pulling
from nai_tui.sync.hashcache import HashCache
from nai_tui.sync.push import pull, push

# --- pull ------------------------------------------------------------------------------


def test_pull_into_an_empty_folder_is_identical(client: ServerClient, project: Path,
                                                cache: HashCache, tmp_path: Path) -> None:
    tree_id = push(client, project, cache=cache)
    dest = tmp_path / "out"
    result = pull(client, tree_id, dest, cache=cache)
    assert snapshot(dest) == snapshot(project)
    assert (result.downloaded, result.skipped, result.bytes) == (7, 0, 3 * MiB + 17 + 12 + 6)
    assert not [p for p in dest.rglob(".nai-pull-*")]


def test_pull_again_downloads_nothing_and_fixes_only_what_changed(
        client: ServerClient, project: Path, cache: HashCache, tmp_path: Path) -> None:
    info = client.tree(push(client, project, cache=cache))
    dest = tmp_path / "out"
    pull(client, info, dest, cache=cache)

    again = pull(client, info, dest, cache=cache)
    assert (again.downloaded, again.skipped, again.bytes) == (0, 7, 0)

    write(dest, "lib/model.py", "W = 9\n")
    (dest / "train.py").chmod(0o644)  # mode only: fixed without a download
    (dest / "lib" / "link_to_model").unlink()
    (dest / "lib" / "link_to_model").symlink_to("copy_of_model.py")
    write(dest, "local_notes.txt", "mine")  # not in the tree: left alone
    fixed = pull(client, info, dest, cache=cache)
    assert (fixed.downloaded, fixed.skipped) == (2, 5)
    assert fixed.bytes == len("W = 1\n")
    assert snapshot(dest) == {**snapshot(project), "local_notes.txt": ("file", b"mine", 0o644)}


def test_pull_a_part_of_a_tree(client: ServerClient, project: Path, cache: HashCache,
                               tmp_path: Path) -> None:
    tree_id = push(client, project, cache=cache)
    dest = tmp_path / "out"
    result = pull(client, tree_id, dest, paths_prefix="lib/", cache=cache)
    assert result.downloaded == 3
    assert sorted(snapshot(dest)) == ["lib/copy_of_model.py", "lib/link_to_model",
                                      "lib/model.py"]
    with pytest.raises(NaiError, match="nothing at"):
        pull(client, tree_id, dest, paths_prefix="nope", cache=cache)


def test_pull_never_writes_through_a_symlink_in_dest(client: ServerClient, project: Path,
                                                     cache: HashCache, tmp_path: Path) -> None:
    tree_id = push(client, project, cache=cache)
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "lib").symlink_to(outside)
    with pytest.raises(NaiError, match="is in the way of lib/"):
        pull(client, tree_id, dest, cache=cache)
    assert list(outside.iterdir()) == []


def test_a_file_replaces_a_local_symlink_rather_than_its_target(
        client: ServerClient, project: Path, cache: HashCache, tmp_path: Path) -> None:
    tree_id = push(client, project, cache=cache)
    victim = write(tmp_path, "victim.txt", "keep me")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "train.py").symlink_to(victim)
    pull(client, tree_id, dest, cache=cache)
    assert victim.read_text() == "keep me"
    assert snapshot(dest) == snapshot(project)


def test_an_interrupted_download_resumes_fetching_only_the_rest(
        client: ServerClient, tmp_path: Path, cache: HashCache,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "p"
    for i in range(3):
        write(root, f"f{i}.bin", noise(MiB + MiB // 2, i))
    tree_id = push(client, root, cache=cache)
    real = pulling._archive
    asked: list[list[str]] = []

    def cut_once(client: ServerClient, tree: str, paths: list[str]
                 ) -> Generator[bytes, None, None]:
        asked.append(paths)
        chunks = real(client, tree, paths)
        if len(asked) > 1:
            yield from chunks
            return
        yield next(chunks)
        yield next(chunks)  # about 2 MiB: the first file and part of the second
        chunks.close()
        raise ConnectionFailed("connection reset by peer")

    monkeypatch.setattr(pulling, "_archive", cut_once)
    dest = tmp_path / "out"
    delays: list[float] = []
    result = pull(client, tree_id, dest, cache=cache, sleep=delays.append)
    assert asked == [["f0.bin", "f1.bin", "f2.bin"], ["f1.bin", "f2.bin"]]
    assert len(delays) == 1
    assert (result.downloaded, result.skipped) == (3, 0)
    assert snapshot(dest) == snapshot(root)
    assert not [p for p in dest.rglob(".nai-pull-*")]


