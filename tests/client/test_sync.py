"""Push against the real server in process: dedup, hashing while sending, resume
after a cut, files changed while sent, progress."""

from __future__ import annotations

import gc
import io
import itertools
import os
import sqlite3
import tarfile
import threading
from collections.abc import Iterable, Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from sync_kit import MiB, Uploads, noise, write

from nai_server.protocol import ConnectionFailed, Invalid, NaiError
from nai_tui.remote.client import ServerClient
from nai_tui.sync import push as sync
from nai_tui.sync.hashcache import FileChanged, HashCache
from nai_tui.sync.push import auto_progress, push, rich_progress, silent_progress

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


def test_a_blob_the_server_lost_is_sent_again(client: ServerClient, project: Path,
                                             cache: HashCache, service: Any) -> None:
    """The store lost a blob (a disk fault, an admin's mistake): pushing the same folder
    again, hash cache warm, sends that blob, and the tree is whole again."""
    uploads = Uploads(client)
    tree_id = push(client, project, cache=cache)
    lost = sha256(b"W = 1\n").hexdigest()
    service.blobs.path_of(lost).unlink()
    assert push(client, project, cache=cache) == tree_id
    assert len(uploads.packs) == 2 and uploads.names() == [lost]
    assert service.blobs.has(lost) and not service.blobs.tree_missing(tree_id)


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


def test_a_push_collects_only_its_own_objects_and_leaves_the_collector_as_it_was(
        client: ServerClient, project: Path, cache: HashCache) -> None:
    frozen: list[int] = []

    class Meter:
        def __init__(self, description: str, total: int) -> None:
            frozen.append(gc.get_freeze_count())

        def advance(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass

    assert gc.get_freeze_count() == 0
    push(client, project, cache=cache, progress=Meter)
    assert frozen and min(frozen) > 0  # objects older than the push were set aside
    assert gc.get_freeze_count() == 0


def test_hashed_files_are_handed_on_in_small_batches_first() -> None:
    assert list(itertools.islice(sync._batch_limits(), 5)) == [64, 256, 1000, 1000, 1000]


def test_a_second_connection_is_dialed_ahead_only_when_files_will_be_sent(
        client: ServerClient, project: Path, cache: HashCache) -> None:
    dialed: list[int] = []
    client.prepare_connections = dialed.append  # type: ignore[method-assign]
    push(client, project, cache=cache)  # a folder never sent: dialed before listing it
    assert dialed == [1]
    push(client, project, cache=cache)  # unchanged: one request, no second connection
    assert dialed == [1]
    write(project, "lib/model.py", "W = 2\n")
    push(client, project, cache=cache)
    assert dialed == [1, 1]


class Opens:
    """Counts the files under `root` opened through os.open (as both hashing and
    packing open them)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: dict[str, int] = {}
        real = os.open

        def counting(path: Any, *args: Any, **kwargs: Any) -> int:
            name = os.fspath(path)
            if name.startswith(f"{root}/"):
                rel = name[len(str(root)) + 1:]
                self.counts[rel] = self.counts.get(rel, 0) + 1
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", counting)


@pytest.mark.parametrize(("kept_bytes", "opens"), [(64 * MiB, 1), (3000, None), (0, 2)])
def test_a_cold_push_reads_a_small_file_once(client: ServerClient, tmp_path: Path,
                                             cache: HashCache, monkeypatch: pytest.MonkeyPatch,
                                             kept_bytes: int, opens: int | None) -> None:
    # The bytes hashed are the bytes sent, while they fit in the memory allowed for
    # them; beyond it a file is read again to be sent.
    monkeypatch.setattr(sync, "KEPT_BYTES", kept_bytes)
    root = tmp_path / "p"
    files = {f"src/m{i}.py": noise(1000 + i, i) for i in range(12)}
    files["big.bin"] = noise(sync.KEEP_BYTES + 1, 99)  # larger than kept: read twice
    for name, data in files.items():
        write(root, name, data)
    budgets: list[sync._Budget] = []
    real_budget = sync._Budget

    def recorded(limit: int) -> sync._Budget:
        budgets.append(real_budget(limit))
        return budgets[-1]

    monkeypatch.setattr(sync, "_Budget", recorded)
    counted = Opens(root, monkeypatch)
    uploads = Uploads(client)
    tree_id = push(client, root, cache=cache)
    small = {n: c for n, c in counted.counts.items() if n != "big.bin"}
    assert counted.counts["big.bin"] == 2
    if opens is None:  # some fit, the others are read again
        assert set(small.values()) == {1, 2}
    else:
        assert set(small.values()) == {opens}
    assert len(small) == 12 and budgets[0].held == 0  # every kept byte was given back
    assert sorted(uploads.names()) == sorted(sha256(d).hexdigest() for d in files.values())
    pulled = tmp_path / "back"
    sync.pull(client, tree_id, pulled, cache=cache)
    assert {n: (pulled / n).read_bytes() for n in files} == files


def test_a_kept_file_the_server_has_gives_its_memory_back(
        client: ServerClient, tmp_path: Path, cache: HashCache,
        monkeypatch: pytest.MonkeyPatch) -> None:
    budgets: list[sync._Budget] = []
    real_budget = sync._Budget
    monkeypatch.setattr(sync, "_Budget", lambda limit: budgets.append(real_budget(limit))
                        or budgets[-1])
    root = tmp_path / "p"
    write(root, "a.txt", "on the server already\n")
    write(root, "b.txt", "new\n")
    client.upload_pack(sync.pack_blobs([(sha256(b"on the server already\n").hexdigest(),
                                         root / "a.txt", 22, None)]))
    uploads = Uploads(client)
    push(client, root, cache=cache)
    assert uploads.names() == [sha256(b"new\n").hexdigest()]
    assert budgets[0].held == 0


def test_batches_hashed_during_a_slow_question_are_asked_about_together(
        client: ServerClient, tmp_path: Path, cache: HashCache,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "BATCH_FILES", 2)
    root = tmp_path / "p"
    for i in range(8):
        write(root, f"f{i}.bin", noise(1000, 200 + i))
    hashed_all = threading.Event()
    asked: list[int] = []
    real = sync.missing_blobs

    def slow(client: ServerClient, digests: list[str]) -> list[str]:
        asked.append(len(digests))
        if len(asked) == 1:  # hashing goes on meanwhile
            assert hashed_all.wait(20)
        return real(client, digests)

    class Meter:
        def __init__(self, description: str, total: int) -> None:
            self.description, self.total, self.done = description, total, 0

        def advance(self, n: int) -> None:
            self.done += n
            if self.description == "hashing" and self.done == self.total:
                hashed_all.set()

        def close(self) -> None:
            pass

    monkeypatch.setattr(sync, "missing_blobs", slow)
    Uploads(client)  # (see test_a_cold_push_sends_while_it_hashes)
    tree_id = push(client, root, cache=cache, progress=Meter)
    # Four batches; those hashed while the first question was out share the next one
    # (the last may still be on its way, and go in a third; or all go in the first, if
    # hashing was done before it was asked).
    assert sum(asked) == 8 and len(asked) <= 3
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
                                                cache: HashCache, tmp_path: Path,
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
    # What was hashed before the failure is saved, though the cache is still open.
    with sqlite3.connect(tmp_path / "hashes.sqlite") as db:
        saved = {os.fsdecode(p) for (p,) in db.execute("SELECT path FROM hashes")}
    assert f"{project.resolve()}/train.py" in saved



class HeldUploads(Uploads):
    """Reads the first chunk of upload number i, then waits for `go[i]` (if there is one)
    before reading the rest."""

    def __init__(self, client: ServerClient, *go: threading.Event) -> None:
        super().__init__(client)
        self.started, self.go, self.calls, self.read = threading.Event(), go, 0, 0

    def __call__(self, stream: Iterable[bytes]) -> Any:
        chunks = self._counted(stream)
        first = next(chunks)
        self.started.set()
        self.calls += 1
        if self.calls <= len(self.go):
            assert self.go[self.calls - 1].wait(20)
        return super().__call__(itertools.chain([first], chunks))

    def _counted(self, stream: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in stream:
            self.read += len(chunk)
            yield chunk


def test_a_large_cold_file_travels_before_it_is_hashed(client: ServerClient, tmp_path: Path,
                                                       cache: HashCache,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "UNHASHED_BYTES", 2 * MiB)
    root = tmp_path / "p"
    big = noise(5 * MiB + 3, 7)
    write(root, "a.txt", "small, sent first\n")
    write(root, "weights.bin", big)
    write(root, "z.txt", "small, hashed after it\n")
    go = threading.Event()
    uploads = HeldUploads(client, go)
    real = sync.read_digest

    def after_the_upload_started(cache: HashCache, path: str, *args: Any) -> str:
        if path.endswith("weights.bin"):  # the upload reaches it before its digest is known
            assert uploads.started.wait(20)
            go.set()
        return real(cache, path, *args)

    monkeypatch.setattr(sync, "read_digest", after_the_upload_started)
    tree_id = push(client, root, cache=cache)
    names = [n for i in range(len(uploads.packs)) for n in uploads.names(i)]
    assert sorted(names) == sorted([sha256(b"small, sent first\n").hexdigest(), "unnamed",
                                    sha256(b"small, hashed after it\n").hexdigest()])
    assert [e.size for e in client.tree(tree_id).entries] == [18, 5 * MiB + 3, 23]
    weights = root / "weights.bin"
    assert cache.lookup(weights, weights.stat()) == sha256(big).hexdigest()


def test_a_large_cold_file_the_server_has_is_dropped_mid_way(
        client: ServerClient, project: Path, tmp_path: Path, cache: HashCache,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "UNHASHED_BYTES", 2 * MiB)
    write(project, "data/more.bin", noise(9 * MiB, 8))
    Uploads(client)  # (see test_a_cold_push_sends_while_it_hashes)
    first = push(client, project, cache=cache)
    write(project, "new.txt", "not on the server yet\n")
    go = [threading.Event(), threading.Event()]
    dropped: list[Path] = []
    real_drop = sync.Drops.drop

    def drop(self: sync.Drops, path: Path) -> None:
        real_drop(self, path)
        go[len(dropped)].set()
        dropped.append(path)

    monkeypatch.setattr(sync.Drops, "drop", drop)
    uploads = HeldUploads(client, *go)
    with HashCache(tmp_path / "other.sqlite") as fresh:  # another clone, a lost cache
        tree_id = push(client, project, cache=fresh)
    assert dropped == [project / "data/more.bin", project / "data/weights.bin"]
    assert tree_id != first and client.tree(tree_id).files == client.tree(first).files + 1
    # Each big file was cut after a chunk or two; only the new file went whole.
    assert uploads.calls == 3 and uploads.names(-1) == [
        sha256(b"not on the server yet\n").hexdigest()]
    assert uploads.read < 5 * MiB


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
