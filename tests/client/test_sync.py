"""Folder sync against the real server in process: scan rules, the hash cache, push
(dedup, resume after a cut) and pull (only what differs, written safely)."""

from __future__ import annotations

import io
import itertools
import logging
import os
import random
import tarfile
import threading
from collections.abc import Generator, Iterable, Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.protocol import ConnectionFailed, Invalid, NaiError
from nai_server.service import Service
from nai_server.testing import AsPeer
from nai_tui import hashcache, sync
from nai_tui import pull as pulling
from nai_tui import scan as scanning
from nai_tui.client import ServerClient
from nai_tui.hashcache import FileChanged, HashCache
from nai_tui.sync import auto_progress, pull, push, rich_progress, scan, silent_progress

MiB = 1 << 20
_mtimes = itertools.count(1_600_000_000)


def write(root: Path, rel: str, data: bytes | str, mode: int = 0o644) -> Path:
    """Write a file with a distinct mtime well in the past (settled, as an edit long ago)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    when = next(_mtimes)
    os.utime(path, (when, when))
    return path


def noise(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything under root: files with bytes and mode, symlinks with their target."""
    found: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            else:
                found[rel] = ("file", path.read_bytes(), path.stat().st_mode & 0o777)
    return found


class Uploads:
    """Wraps `client.upload_pack` to record what each upload carried."""

    def __init__(self, client: ServerClient) -> None:
        self.packs: list[bytes] = []
        self._real = client.upload_pack
        client.upload_pack = self  # type: ignore[method-assign]

    def __call__(self, stream: Iterable[bytes]) -> Any:
        data = b"".join(stream)
        self.packs.append(data)
        return self._real([data])

    def names(self, index: int = -1) -> list[str]:
        with tarfile.open(fileobj=io.BytesIO(self.packs[index])) as tar:
            return tar.getnames()

    @property
    def total(self) -> int:
        return sum(len(p) for p in self.packs)


@pytest.fixture
def client(service: Service) -> Iterator[ServerClient]:
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as http:
        yield ServerClient(http)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[HashCache]:
    with HashCache(tmp_path / "hashes.sqlite") as c:
        yield c


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(root, "train.py", "print('hi')\n", 0o755)
    write(root, "lib/model.py", "W = 1\n")
    write(root, "lib/copy_of_model.py", "W = 1\n")
    write(root, "data/weights.bin", noise(3 * MiB + 17, 1), 0o600)
    write(root, "empty", b"")
    (root / "lib" / "link_to_model").symlink_to("model.py")
    (root / "data_link").symlink_to("data")
    return root


def paths(entries: list[dict[str, Any]]) -> list[str]:
    return [e["path"] for e in entries]


# --- scan ------------------------------------------------------------------------------


def test_scan_honours_nested_gitignore_naiignore_and_negation(
        tmp_path: Path, cache: HashCache) -> None:
    root = tmp_path / "p"
    write(root, ".gitignore", "*.log\n!keep.log\nbuild/\n/only_root.txt\nweights.bin\n")
    write(root, ".naiignore", "data/\n!weights.bin\n")
    for rel in ["a.py", "x.log", "keep.log", "build/out.o", "only_root.txt", "weights.bin",
                "sub/only_root.txt", "sub/x.log", "sub/t.tmp", "sub/build/y.o",
                "sub/deeper/z.tmp", "data/big", ".git/config", "sub/.git/HEAD"]:
        write(root, rel, rel)
    write(root, "sub/.gitignore", "*.tmp\n!x.log\n")

    assert paths(scan(root, cache=cache)) == [
        ".gitignore", ".naiignore", "a.py", "keep.log", "sub/.gitignore",
        "sub/only_root.txt",  # "/only_root.txt" is anchored to the root folder
        "sub/x.log",  # re-included by the deeper .gitignore
        "weights.bin",  # ignored by .gitignore, re-included by .naiignore
    ]
    assert "a.py" not in paths(scan(root, cache=cache, extra_ignores=["*.py"]))


def test_the_fast_no_match_check_agrees_with_pathspec() -> None:
    lines = ["*.log", "!keep.log", "build/", "/top", "a/**/b", "**/deep", "*.py[cod]",
             "\\#lit", "sp\\ ace", "x?z", "[!a]bc", "docs/*.md", "!docs/index.md", "# note"]
    rules = scanning._Rules(lines)
    assert rules.any is not None  # the shortcut is in use
    names = ["x.log", "keep.log", "build", "top", "b", "deep", "m.pyc", "#lit", "sp ace",
             "xyz", "abc", "zbc", "index.md", "r.md", "plain.txt"]
    folders = ["", "a/", "a/q/", "docs/", "build/", "sub/top/"]
    for path in [f + n + end for f in folders for n in names for end in ("", "/")]:
        assert rules.verdict(path) == rules.spec.check_file(path).include, path


def test_scan_entries_carry_size_mode_digest_and_symlinks(project: Path,
                                                          cache: HashCache) -> None:
    entries = {e["path"]: e for e in scan(project, cache=cache)}
    assert list(entries) == sorted(entries)
    assert entries["train.py"] == {"path": "train.py", "kind": "file", "size": 12,
                                   "mode": 0o755, "target": "",
                                   "sha256": sha256(b"print('hi')\n").hexdigest()}
    assert entries["data/weights.bin"]["mode"] == 0o600
    assert entries["lib/link_to_model"] == {"path": "lib/link_to_model", "kind": "symlink",
                                            "size": 0, "mode": 0o777, "sha256": "",
                                            "target": "model.py"}
    assert entries["data_link"]["kind"] == "symlink"  # not followed into


@pytest.mark.parametrize("target", ["../outside.txt", "/etc/passwd", "loop/../.."])
def test_symlink_leaving_the_folder_is_refused_naming_it(tmp_path: Path, cache: HashCache,
                                                         target: str) -> None:
    root = tmp_path / "p"
    write(root, "ok.txt", "ok")
    (root / "loop").symlink_to(".")
    (root / "bad").symlink_to(target)
    with pytest.raises(NaiError, match=r"bad: symlink points outside the folder"):
        scan(root, cache=cache)



def test_names_the_server_would_refuse_are_refused_before_sending(tmp_path: Path,
                                                                  cache: HashCache) -> None:
    # The client applies the server's own path rule (nai_server.protocol.path_problem).
    root = tmp_path / "p"
    write(root, "ok.txt", "ok")
    (root / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"latin-1 name")
    (root / "back\\slash.txt").write_bytes(b"x")
    with pytest.raises(NaiError) as refused:
        scan(root, cache=cache)
    message = str(refused.value)
    assert "not valid UTF-8; rename it or add it to .naiignore" in message
    assert "back\\slash.txt: path contains a backslash" in message


def test_special_files_are_skipped_with_a_warning(tmp_path: Path, cache: HashCache,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "p"
    write(root, "ok.txt", "ok")
    os.mkfifo(root / "pipe")
    with caplog.at_level(logging.WARNING, logger="nai.sync"):
        assert paths(scan(root, cache=cache)) == ["ok.txt"]
    assert "pipe" in caplog.text


# --- hash cache ------------------------------------------------------------------------


def test_hash_cache_avoids_reading_unchanged_files(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    real = hashcache.hash_file

    def counting(path: Path, *args: Any) -> Any:
        read.append(Path(path).name)
        return real(path, *args)

    monkeypatch.setattr(hashcache, "hash_file", counting)
    db = tmp_path / "hashes.sqlite"
    with HashCache(db) as first:
        before = scan(project, cache=first)
    assert len(read) == 5

    read.clear()
    with HashCache(db) as again:  # a later run: the cache persisted on disk
        assert scan(project, cache=again) == before
        assert read == []
        write(project, "lib/model.py", "W = 2\n")  # same size, new mtime
        scan(project, cache=again)
    assert read == ["model.py"]


def test_a_file_modified_just_now_is_not_trusted_from_the_cache(
        tmp_path: Path, cache: HashCache) -> None:
    root = tmp_path / "p"
    (root / "fresh.txt").parent.mkdir()
    (root / "fresh.txt").write_text("a")  # mtime is now: a same-tick rewrite is possible
    scan(root, cache=cache)
    scan(root, cache=cache)
    assert cache.files_hashed == 2


def test_a_damaged_cache_file_is_replaced(tmp_path: Path, project: Path) -> None:
    db = tmp_path / "hashes.sqlite"
    db.write_bytes(b"this is not sqlite" * 100)
    with HashCache(db) as damaged:
        scan(project, cache=damaged)
    with HashCache(db) as fresh:
        scan(project, cache=fresh)
        assert fresh.files_hashed == 0


def test_processes_sharing_the_cache_file_keep_each_others_entries(tmp_path: Path) -> None:
    db = tmp_path / "hashes.sqlite"
    a_file, b_file = write(tmp_path, "a.txt", "a"), write(tmp_path, "b.txt", "b")
    first, second = HashCache(db), HashCache(db)  # two connections, as two processes
    try:
        first.digest(a_file)
        second.digest(b_file)
        second.flush()
        first.flush()
    finally:
        first.close()
        second.close()
    with HashCache(db) as later:
        assert later.lookup(a_file, a_file.lstat()) == sha256(b"a").hexdigest()
        assert later.lookup(b_file, b_file.lstat()) == sha256(b"b").hexdigest()


# --- push ------------------------------------------------------------------------------


def test_push_then_push_again_sends_nothing(client: ServerClient, project: Path,
                                            cache: HashCache) -> None:
    uploads = Uploads(client)
    tree_id = push(client, project, cache=cache)
    # One pack with each distinct content once (model.py and its copy are the same blob).
    assert len(uploads.packs) == 1
    assert len(uploads.names()) == 4
    assert client.tree(tree_id).files == 5

    assert push(client, project, cache=cache) == tree_id
    assert len(uploads.packs) == 1


def test_the_client_computes_the_same_tree_id_as_the_server(
        client: ServerClient, project: Path, cache: HashCache) -> None:
    """An unchanged folder is re-synced with one HEAD request only if both sides
    agree on the id (modes, symlinks, non-ASCII names included)."""
    write(project, "données/é.txt", "accents\n", 0o640)
    server_id = push(client, project, cache=cache)
    assert sync.tree_id(sync.scan(project, cache=cache)) == server_id
    calls: list[str] = []
    original = client.http.request

    def counting(method: str, url: object, **kwargs: Any) -> Any:
        calls.append(f"{method} {url}")
        return original(method, url, **kwargs)

    client.http.request = counting  # type: ignore[method-assign]
    assert push(client, project, cache=cache) == server_id
    assert calls == [f"HEAD /v1/trees/{server_id}"]


def test_changing_one_file_sends_only_its_blob(client: ServerClient, project: Path,
                                               cache: HashCache) -> None:
    uploads = Uploads(client)
    first = push(client, project, cache=cache)
    write(project, "train.py", "print('bye')\n", 0o755)
    second = push(client, project, cache=cache)
    assert second != first
    assert uploads.names() == [sha256(b"print('bye')\n").hexdigest()]
    assert len(uploads.packs[-1]) < 4096


def test_an_interrupted_upload_resumes_sending_only_the_rest(
        client: ServerClient, tmp_path: Path, cache: HashCache) -> None:
    root = tmp_path / "p"
    blobs = [noise(MiB + MiB // 2, seed) for seed in range(3)]
    for i, data in enumerate(blobs):
        write(root, f"f{i}.bin", data)
    real = client.upload_pack
    sent: list[bytes] = []

    def cut_after_two_chunks(stream: Iterable[bytes]) -> Any:
        if sent:
            data = b"".join(stream)
            sent.append(data)
            return real([data])
        chunks = iter(stream)
        part = next(chunks) + next(chunks)  # 2 MiB: the first blob and half the second
        sent.append(part)
        try:
            real([part])
        except Invalid:  # the server saw the pack end early and kept the complete blob
            pass
        raise ConnectionFailed("connection reset by peer")

    client.upload_pack = cut_after_two_chunks  # type: ignore[method-assign]
    delays: list[float] = []
    tree_id = push(client, root, cache=cache, sleep=delays.append)

    assert len(sent) == 2 and len(delays) == 1
    with tarfile.open(fileobj=io.BytesIO(sent[1])) as tar:
        assert tar.getnames() == [sha256(b).hexdigest() for b in blobs[1:]]
    assert client.tree(tree_id).files == 3


def test_upload_gives_up_after_the_retries(client: ServerClient, project: Path,
                                           cache: HashCache) -> None:
    def always_cut(stream: Iterable[bytes]) -> Any:
        next(iter(stream))
        raise ConnectionFailed("connection reset by peer")

    client.upload_pack = always_cut  # type: ignore[method-assign]
    delays: list[float] = []
    with pytest.raises(ConnectionFailed):
        push(client, project, cache=cache, retries=2, sleep=delays.append)
    assert delays == [1.0, 2.0]


def test_a_file_changed_during_upload_fails_naming_it(client: ServerClient, project: Path,
                                                      cache: HashCache) -> None:
    real = client.upload_pack

    def edit_then_send(stream: Iterable[bytes]) -> Any:
        write(project, "data/weights.bin", noise(3 * MiB + 17, 2), 0o600)  # same size
        return real(stream)

    client.upload_pack = edit_then_send  # type: ignore[method-assign]
    with pytest.raises(FileChanged, match=r"weights\.bin changed while nai was reading it"):
        push(client, project, cache=cache, retries=0)
    client.upload_pack = real  # type: ignore[method-assign]
    tree_id = push(client, project, cache=cache)  # the next run picks up the new content
    sizes = {e.path: e.sha256 for e in client.tree(tree_id).entries}
    assert sizes["data/weights.bin"] == sha256(noise(3 * MiB + 17, 2)).hexdigest()



def test_a_file_rewritten_while_it_is_packed_fails_naming_it(client: ServerClient, project: Path,
                                                             cache: HashCache) -> None:
    # The scan hashed weights.bin, so packing trusts that digest and does not hash the
    # file again; a rewrite in the middle of reading it still shows in its mtime.
    real = client.upload_pack

    def edit_midway(stream: Iterable[bytes]) -> Any:
        pieces = iter(stream)
        first = next(pieces)  # the first MiB of weights.bin has been read
        write(project, "data/weights.bin", noise(3 * MiB + 17, 3), 0o600)  # same size
        return real(itertools.chain([first], pieces))

    client.upload_pack = edit_midway  # type: ignore[method-assign]
    with pytest.raises(FileChanged, match=r"weights\.bin changed while nai was reading it"):
        push(client, project, cache=cache, retries=0)
    client.upload_pack = real  # type: ignore[method-assign]
    assert client.missing_blobs([sha256(noise(3 * MiB + 17, 1)).hexdigest()])  # not stored
    tree_id = push(client, project, cache=cache)
    digests = {e.path: e.sha256 for e in client.tree(tree_id).entries}
    assert digests["data/weights.bin"] == sha256(noise(3 * MiB + 17, 3)).hexdigest()


def test_packing_hashes_only_what_the_cache_cannot_vouch_for(
        project: Path, cache: HashCache, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = scan(project, cache=cache)
    blobs = [(e["sha256"], project / e["path"], e["size"]) for e in entries
             if e["kind"] == "file"]
    hashed: list[int] = []
    real_sha256 = sync.hashlib.sha256

    class Counting:
        def __init__(self) -> None:
            self.inner = real_sha256()

        def update(self, data: bytes) -> None:
            hashed.append(len(data))
            self.inner.update(data)

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    monkeypatch.setattr(sync.hashlib, "sha256", Counting)
    packed = b"".join(sync.pack_blobs(blobs, cache=cache))
    assert hashed == []  # every file was hashed by the scan and has not changed since
    assert b"".join(sync.pack_blobs(blobs)) == packed  # without a cache: hashed, same bytes
    assert sum(hashed) == sum(size for _, _, size in blobs)



def test_a_cold_push_sends_while_it_hashes(client: ServerClient, tmp_path: Path,
                                           cache: HashCache,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Eight 1.5 MiB files, asked about two at a time: the hashing meter stops halfway
    # until the upload has sent something, which only overlapping work lets happen.
    monkeypatch.setattr(sync, "BATCH_FILES", 2)
    root = tmp_path / "p"
    for i in range(8):
        write(root, f"f{i}.bin", noise(MiB + MiB // 2, 100 + i))
    sent_some = threading.Event()
    hashed = [0]
    halfway: list[bool] = []

    class Meter:
        def __init__(self, description: str, total: int) -> None:
            self.description, self.total = description, total

        def advance(self, n: int) -> None:
            if self.description == "uploading":
                sent_some.set()
                return
            hashed[0] += n
            if hashed[0] >= self.total // 2 and not halfway:
                halfway.append(sent_some.wait(20))  # False: nothing was sent meanwhile

        def close(self) -> None:
            pass

    # Read the pack in this thread, as a socket transport does: the in-process test
    # client would read it on its event loop, which the hashing thread's questions need.
    Uploads(client)
    tree_id = push(client, root, cache=cache, progress=Meter)
    assert halfway == [True] and hashed[0] == 8 * (MiB + MiB // 2)
    assert client.tree(tree_id).files == 8


def test_a_cold_push_of_what_the_server_has_sends_no_blob(client: ServerClient, project: Path,
                                                          tmp_path: Path,
                                                          cache: HashCache) -> None:
    first = push(client, project, cache=cache)
    uploads = Uploads(client)
    with HashCache(tmp_path / "other.sqlite") as fresh:  # another clone, a lost cache
        assert push(client, project, cache=fresh) == first
    assert uploads.packs == []


def test_a_failure_while_hashing_stops_the_push(client: ServerClient, project: Path,
                                                cache: HashCache,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = sync.read_digest

    def unreadable(cache: HashCache, path: str, *args: Any) -> str:
        if path.endswith("weights.bin"):
            raise NaiError(f"cannot read {path}: Permission denied")
        return real(cache, path, *args)

    monkeypatch.setattr(sync, "read_digest", unreadable)
    with pytest.raises(NaiError, match=r"weights\.bin: Permission denied"):
        push(client, project, cache=cache)
    assert client.http.get("/v1/jobs").status_code == 200  # the client is still usable



@pytest.mark.parametrize("first", [MiB - 1024, MiB - 512, MiB, 2 * MiB + 512, 4096])
def test_packs_are_whole_wherever_a_member_meets_a_chunk_boundary(tmp_path: Path,
                                                                  first: int) -> None:
    # Members ending just short of, on, or past the 1 MiB chunk the pack is sent in.
    files = {"a": noise(first, 1), "b": noise(100, 2), "c": noise(MiB + 7, 3), "d": b""}
    blobs = []
    for name, data in files.items():
        write(tmp_path, name, data)
        blobs.append((sha256(data).hexdigest(), tmp_path / name, len(data)))
    pieces = list(sync.pack_blobs(blobs))
    assert all(len(p) <= MiB + 512 for p in pieces)
    packed = b"".join(pieces)
    assert len(packed) == sync.pack_size(len(d) for d in files.values())
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert got == {sha256(d).hexdigest(): d for d in files.values()}


def test_push_reports_progress_in_bytes(client: ServerClient, project: Path,
                                        cache: HashCache) -> None:
    bars: dict[str, list[int]] = {}

    class Meter:
        def __init__(self, description: str, total: int) -> None:
            self.done = bars.setdefault(description, [total, 0])

        def advance(self, n: int) -> None:
            self.done[1] += n

        def close(self) -> None:
            pass

    uploads = Uploads(client)
    push(client, project, cache=cache, progress=Meter)
    assert bars["hashing"][0] == bars["hashing"][1] == 3 * MiB + 17 + 12 + 6 + 6
    # Before hashing, the total counts lib/copy_of_model.py's blob twice; the bar still
    # ends full, counting the copy's bytes as done when it turns out to be a duplicate.
    total, done = bars["uploading"]
    assert total == done == uploads.total + 1024


def test_progress_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert auto_progress() is silent_progress  # pytest's stderr is not a terminal
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert auto_progress() is rich_progress
    meter = rich_progress("uploading", 2 * MiB)
    meter.advance(2 * MiB)
    meter.close()
    assert "uploading" in capsys.readouterr().err


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


def test_blob_headers_match_tarfile() -> None:
    """The fast header builder writes what tarfile itself writes."""
    import tarfile

    for size in (0, 1, 511, 512, 4096, 10**9):
        digest = f"{size:064x}"
        info = tarfile.TarInfo(digest)
        info.size, info.mode, info.mtime = size, 0o444, 0
        assert sync.blob_header(digest, size) == info.tobuf(tarfile.USTAR_FORMAT)
