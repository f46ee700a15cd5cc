"""Pull: a tree written into a folder, fetching only what differs, written safely."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Generator
from pathlib import Path

import pytest
from sync_kit import MiB, noise, snapshot, write

from nai_server.protocol import Conflict, ConnectionFailed, NaiError, NotFound
from nai_tui.remote.client import ServerClient
from nai_tui.sync import pull as pulling
from nai_tui.sync import pull_temps
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

    (dest / "lib" / "model.py").unlink()
    (dest / "train.py").chmod(0o644)  # mode only: fixed without a download
    (dest / "lib" / "link_to_model").unlink()
    (dest / "lib" / "link_to_model").symlink_to("copy_of_model.py")
    write(dest, "local_notes.txt", "mine")  # not in the tree: left alone
    fixed = pull(client, info, dest, cache=cache)
    assert (fixed.downloaded, fixed.skipped, fixed.kept) == (2, 5, ())
    assert fixed.bytes == len("W = 1\n")
    assert snapshot(dest) == {**snapshot(project), "local_notes.txt": ("file", b"mine", 0o644)}


def test_a_local_edit_is_kept_and_named_unless_forced(
        client: ServerClient, project: Path, cache: HashCache, tmp_path: Path) -> None:
    info = client.tree(push(client, project, cache=cache))
    dest = tmp_path / "out"
    write(dest, "train.py", "# my own train.py, there before any pull\n")
    first = pull(client, info, dest, cache=cache)
    assert [(k.path, k.reason) for k in first.kept] == [
        ("train.py", "differs from the server's copy and was not written by nai pull")]
    assert (first.downloaded, first.skipped) == (6, 0)

    write(dest, "lib/model.py", "W = 9  # tuned by hand\n")
    again = pull(client, info, dest, cache=cache)
    assert [(k.path, k.reason) for k in again.kept] == [
        ("lib/model.py", "changed here since nai pulled it"),
        ("train.py", "differs from the server's copy and was not written by nai pull")]
    assert (again.downloaded, again.skipped, again.bytes) == (0, 5, 0)
    assert (dest / "lib" / "model.py").read_text() == "W = 9  # tuned by hand\n"
    assert (dest / "train.py").read_text().startswith("# my own")

    forced = pull(client, info, dest, cache=cache, force=True)
    assert (forced.downloaded, forced.kept) == (2, ())
    assert snapshot(dest) == snapshot(project)


def test_a_newer_version_replaces_what_the_last_pull_left(
        client: ServerClient, project: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with HashCache(tmp_path / "first.sqlite") as cache:
        pull(client, push(client, project, cache=cache), dest, cache=cache)
    write(project, "lib/model.py", "W = 2\n")
    (project / "lib" / "copy_of_model.py").unlink()
    write(project, "lib/copy_of_model.py", "W = 2\n")  # the same content as model.py
    with HashCache(tmp_path / "first.sqlite") as cache:  # another run: records kept
        newer = pull(client, push(client, project, cache=cache), dest, cache=cache)
    assert (newer.downloaded, newer.kept) == (2, ())
    assert snapshot(dest) == snapshot(project)


def test_temporaries_of_interrupted_pulls_are_removed_and_live_ones_left(
        client: ServerClient, project: Path, cache: HashCache, tmp_path: Path) -> None:
    tree_id = push(client, project, cache=cache)
    dest = tmp_path / "out"
    ended = subprocess.Popen(["true"])  # a pid whose process has ended
    ended.wait()
    host = pull_temps.HOST
    dead = write(dest, f"lib/.nai-pull-{ended.pid}.{host}-x1y2", b"half a file")
    older_nai = write(dest, ".nai-pull-k3j4h5", b"left by an older nai, long ago")
    live = write(dest, f".nai-pull-1.{host}-a1b2", b"pid 1 is alive: still writing")
    elsewhere = write(dest, ".nai-pull-4242.0badc0de-q9", b"another host's pull")
    now = time.time()
    for recent in (dead, live, elsewhere):  # all written to just now: only a writer ended
        os.utime(recent, (now, now))
    result = pull(client, tree_id, dest, cache=cache)
    assert result.stale_removed == 2
    assert not dead.exists() and not older_nai.exists()
    assert live.exists() and elsewhere.exists()
    assert snapshot(dest) == {**snapshot(project), **{
        f".nai-pull-1.{host}-a1b2": ("file", b"pid 1 is alive: still writing", 0o644),
        ".nai-pull-4242.0badc0de-q9": ("file", b"another host's pull", 0o644)}}


def test_a_killed_pulls_partial_file_is_resumed_by_the_next_pull(
        client: ServerClient, tmp_path: Path, cache: HashCache,
        monkeypatch: pytest.MonkeyPatch) -> None:
    big = noise(2 * MiB + 5, 7)
    root = tmp_path / "p"
    write(root, "ckpt/model.bin", big)
    write(root, "ckpt/twin.bin", big)  # the same content: resumed once, copied
    info = client.tree(push(client, root, cache=cache))
    digest = info.entries[0].sha256
    ended = subprocess.Popen(["true"])
    ended.wait()
    dest = tmp_path / "out"

    def killed_pull_left(data: bytes) -> Path:
        name = f".nai-pull-{ended.pid}.{pull_temps.HOST}-{digest[:16]}-k1ll"
        partial = write(dest, f"ckpt/{name}", data, 0o600)
        os.utime(partial, (time.time(), time.time()))
        return partial

    partial = killed_pull_left(big[:MiB + 3])
    result = pull(client, info, dest, cache=cache)
    assert (result.resumed, result.downloaded, result.stale_removed) == (1, 2, 0)
    assert result.bytes == len(big) - (MiB + 3)
    assert snapshot(dest) == snapshot(root) and not partial.exists()

    # Killed just before the rename: the temporary is whole, nothing is asked for.
    (dest / "ckpt" / "model.bin").unlink()
    killed_pull_left(big)
    whole = pull(client, info, dest, cache=cache)
    assert (whole.resumed, whole.downloaded, whole.bytes) == (1, 1, 0)
    assert snapshot(dest) == snapshot(root)

    # Bytes that are not the file's beginning are found out by the digest once the rest
    # has come: the file is then fetched whole.
    (dest / "ckpt" / "model.bin").unlink()
    killed_pull_left(b"x" * MiB)
    again = pull(client, info, dest, cache=cache)
    assert (again.resumed, again.downloaded) == (0, 1)
    assert again.bytes == (len(big) - MiB) + len(big)
    assert snapshot(dest) == snapshot(root)

    # A server without ranged reads: the file comes whole, the partial is dropped.
    def no_route(*args: object) -> None:
        raise NotFound("Not Found")

    monkeypatch.setattr(pull_temps, "file_from", no_route)
    (dest / "ckpt" / "model.bin").unlink()
    partial = killed_pull_left(big[:100])
    third = pull(client, info, dest, cache=cache)
    assert (third.resumed, third.downloaded, third.bytes) == (0, 1, len(big))
    assert snapshot(dest) == snapshot(root) and not partial.exists()


def test_the_temporary_names_its_writer() -> None:
    start = 1_000_000.0
    assert pull_temps.temp_prefix() == f".nai-pull-{os.getpid()}.{pull_temps.HOST}-"
    alive = f".nai-pull-1.{pull_temps.HOST}-x"
    assert pull_temps.abandoned(alive, start - pull_temps.ABANDONED_AFTER - 1, start)  # a day old
    assert not pull_temps.abandoned(alive, start - 1, start)
    assert not pull_temps.abandoned(pull_temps.temp_prefix() + "x", start, start)  # this run's
    assert pull_temps.abandoned(pull_temps.temp_prefix() + "x", start - 1, start)  # an earlier
    assert not pull_temps.abandoned(".nai-pull-k3j4h5", start - 30, start)  # no writer named
    assert pull_temps.abandoned(".nai-pull-k3j4h5", start - 61, start)


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
    # f1.bin was cut off part-way: what had arrived is kept, only its rest is asked for
    # (a ranged read), then f2.bin; no byte comes twice.
    assert asked == [["f0.bin", "f1.bin", "f2.bin"], ["f2.bin"]]
    assert len(delays) == 1
    assert (result.downloaded, result.skipped, result.resumed) == (3, 0, 1)
    assert result.bytes == 3 * (MiB + MiB // 2)
    assert snapshot(dest) == snapshot(root)
    assert not [p for p in dest.rglob(".nai-pull-*")]




def test_pulling_a_tree_that_lost_a_blob_names_the_files(
        client: ServerClient, project: Path, cache: HashCache, tmp_path: Path,
        service: object) -> None:
    tree_id = push(client, project, cache=cache)
    service.blobs.path_of(hashlib.sha256(b"W = 1\n").hexdigest()).unlink()  # type: ignore[attr-defined]
    with pytest.raises(Conflict) as refused:
        pull(client, tree_id, tmp_path / "out", cache=cache)
    # The two files share a blob: the client asks for one, and copies it to the other.
    assert "'lib/copy_of_model.py'" in str(refused.value)
    assert refused.value.details["missing_files"] == ["lib/copy_of_model.py"]
