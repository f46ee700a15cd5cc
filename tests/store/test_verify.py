"""`nai-admin store verify`: the pure rules (what a damaged blob breaks, the pace) and
the walk over a real store (missing and corrupt blobs and trees, --repair)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from nai_server.core import store_check as check
from nai_server.core.trees import Entry
from nai_server.protocol import Conflict
from nai_server.store.blobs import BlobStore
from nai_server.store.verify import StoreVerifier

MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file(path: str, data: bytes) -> Entry:
    return Entry(path=path, kind="file", size=len(data), mode=0o644, sha256=sha(data), target="")


# --- the pure part ---------------------------------------------------------------------


def test_the_pace_keeps_reads_within_the_rate() -> None:
    assert check.throttle_delay(10 * MiB, 0.0, 10 * MiB) == 1.0  # a second's worth at once
    assert check.throttle_delay(10 * MiB, 0.4, 10 * MiB) == pytest.approx(0.6)
    assert check.throttle_delay(10 * MiB, 2.0, 10 * MiB) == 0.0  # slower than the rate
    assert check.throttle_delay(10 * MiB, 0.0, 0) == 0.0  # 0: no limit


def test_damaged_files_are_the_bad_and_the_absent_each_asked_once() -> None:
    asked: list[str] = []
    entries = [file("a", b"A"), file("b", b"B"), file("copy_of_b", b"B"), file("c", b"C"),
               Entry(path="link", kind="symlink", size=0, mode=0o777, sha256="", target="a")]

    def have(digest: str) -> bool:
        asked.append(digest)
        return digest != sha(b"C")

    found = check.damaged_files(entries, {sha(b"B"): check.CORRUPT}, have)
    assert found == [("b", sha(b"B"), "corrupt"), ("copy_of_b", sha(b"B"), "corrupt"),
                     ("c", sha(b"C"), "missing")]
    assert asked == [sha(b"A"), sha(b"C")]


def test_a_broken_tree_names_the_jobs_and_versions_that_use_it() -> None:
    bad, good = "b" * 64, "g" * 64
    jobs = [{"id": 3, "user": "ann", "state": "queued", "code_tree": bad},
            {"id": 2, "user": "bob", "state": "succeeded", "code_tree": good,
             "output_tree": bad, "dataset": {"name": "d", "version": 1, "tree_id": bad}},
            {"id": 1, "user": "cy", "state": "failed", "code_tree": good}]
    broken = {bad: check.INCOMPLETE}
    assert check.broken_jobs(broken, jobs) == [
        {"id": 3, "user": "ann", "state": "queued",
         "trees": [{"role": "code", "tree_id": bad, "problem": "incomplete"}]},
        {"id": 2, "user": "bob", "state": "succeeded",
         "trees": [{"role": "outputs", "tree_id": bad, "problem": "incomplete"},
                   {"role": "dataset", "tree_id": bad, "problem": "incomplete"}]}]
    entries = [("dataset", {"name": "d", "owner": {"group": "lab"}, "versions": [
        {"version": 1, "tree_id": bad}, {"version": 2, "tree_id": good}]})]
    assert check.broken_versions(broken, entries) == [
        {"kind": "dataset", "name": "d", "version": 1, "tree_id": bad,
         "problem": "incomplete", "owner": "lab"}]
    assert check.referenced_trees(jobs, entries) == {bad, good}


# --- the walk --------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def verifier(store: BlobStore, refs=([], []), **kw) -> StoreVerifier:  # type: ignore[no-untyped-def]
    kw.setdefault("rate", 0)
    return StoreVerifier(store, lambda: refs, **kw)


def damage(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)
    os.chmod(path, 0o444)


def test_a_clean_store_is_clean(store: BlobStore) -> None:
    store.put_bytes(b"A" * 100)
    store.put_bytes(b"B")
    store.put_tree([file("a", b"A" * 100), file("b", b"B")])
    report = verifier(store).run(repair=False)
    assert report["state"] == "done" and report["clean"]
    assert (report["blobs_checked"], report["bytes_checked"], report["trees_checked"]) == (
        2, 101, 1)


def test_missing_and_corrupt_blobs_are_listed_with_what_they_break(store: BlobStore) -> None:
    for data in (b"keep", b"lost", b"rotten"):
        store.put_bytes(data)
    store.claims.record("ann", [sha(b"lost"), sha(b"rotten")])
    tree = store.put_tree([file("keep.txt", b"keep"), file("lost.txt", b"lost"),
                           file("sub/rotten.bin", b"rotten")])
    fine = store.put_tree([file("keep.txt", b"keep")])
    store.path_of(sha(b"lost")).unlink()
    damage(store.path_of(sha(b"rotten")), b"rotted")
    jobs = [{"id": 7, "user": "ann", "state": "succeeded", "code_tree": fine,
             "output_tree": tree}, {"id": 8, "user": "ann", "state": "queued",
                                    "code_tree": "c" * 64}]
    versions = [("model", {"name": "m", "owner": {"user": "ann"},
                           "versions": [{"version": 1, "tree_id": tree}]})]

    report = verifier(store, (jobs, versions)).run(repair=False)

    assert not report["clean"]
    assert report["blobs"] == [
        {"digest": sha(b"rotten"), "problem": "corrupt", "moved_to": None, "owners": ["ann"]},
        {"digest": sha(b"lost"), "problem": "missing", "moved_to": None, "owners": ["ann"]}]
    assert report["trees"] == [
        {"id": tree, "problem": "incomplete", "files": ["lost.txt", "sub/rotten.bin"],
         "damaged_files": 2, "moved_to": None},
        {"id": "c" * 64, "problem": "missing", "files": [], "damaged_files": 0,
         "moved_to": None}]
    assert [(j["id"], [u["role"] for u in j["trees"]]) for j in report["jobs"]] == [
        (7, ["outputs"]), (8, ["code"])]
    assert [(v["name"], v["version"]) for v in report["versions"]] == [("m", 1)]
    assert store.path_of(sha(b"rotten")).read_bytes() == b"rotted"  # no --repair: untouched


def test_repair_moves_corrupt_blobs_aside_and_the_next_upload_restores_them(
        store: BlobStore) -> None:
    store.put_bytes(b"rotten")
    tree = store.put_tree([file("r", b"rotten")])
    damage(store.path_of(sha(b"rotten")), b"rotted")
    assert store.missing([sha(b"rotten")]) == []  # the store believes it has it

    report = verifier(store).run(repair=True)

    [blob] = report["blobs"]
    assert blob["problem"] == "corrupt" and blob["moved_to"].startswith("corrupt/")
    assert (store.root / blob["moved_to"]).read_bytes() == b"rotted"  # kept, not deleted
    assert store.missing([sha(b"rotten")]) == [sha(b"rotten")]  # asked for again
    assert report["trees"][0]["id"] == tree and report["trees"][0]["problem"] == "incomplete"
    store.put_bytes(b"rotten")
    assert store.tree_missing(tree) == []
    assert verifier(store).run(repair=False)["clean"]


def test_a_corrupt_tree_file_is_listed_and_repair_moves_it_aside(store: BlobStore) -> None:
    store.put_bytes(b"A")
    tree = store.put_tree([file("a", b"A")])
    path = store.root / "trees" / tree[:2] / f"{tree[2:]}.json"
    damage(path, path.read_bytes().replace(b'"a"', b'"b"'))
    assert verifier(store).run(repair=False)["trees"] == [
        {"id": tree, "problem": "corrupt", "files": [], "damaged_files": 0, "moved_to": None}]
    moved = verifier(store).run(repair=True)["trees"][0]["moved_to"]
    assert moved and (store.root / moved).exists() and not store.has_tree(tree)
    assert store.put_tree([file("a", b"A")]) == tree  # recorded again, whole


def test_stray_files_are_reported_and_left_alone(store: BlobStore) -> None:
    store.put_bytes(b"A")
    stray = store.root / "sha256" / sha(b"A")[:2] / "not-a-digest"
    stray.write_bytes(b"?")
    report = verifier(store).run(repair=True)
    assert report["stray"] == [f"sha256/{sha(b'A')[:2]}/not-a-digest"]
    assert stray.exists() and not report["clean"]


def test_reads_are_paced_at_the_configured_rate(store: BlobStore) -> None:
    for i in range(3):
        store.put_bytes(bytes([i]) * MiB)
    waits: list[float] = []
    now = [0.0]

    def pause(delay: float) -> None:
        waits.append(delay)
        now[0] += delay

    report = verifier(store, rate=MiB, pause=pause, monotonic=lambda: now[0]).run(repair=False)
    assert report["clean"]
    # 3 MiB at 1 MiB/s: the walk waits 3 s in all, a second after each MiB read.
    assert waits == [1.0, 1.0, 1.0]


def test_it_runs_in_the_background_one_at_a_time(store: BlobStore) -> None:
    store.put_bytes(b"A" * MiB)
    paused, go = threading.Event(), threading.Event()

    def pause(_: float) -> None:
        paused.set()
        go.wait(10)

    v = verifier(store, rate=1, pause=pause)
    assert v.report()["state"] == "never"
    assert v.start(repair=False)["state"] == "running"
    assert paused.wait(10)
    assert v.report()["state"] == "running"
    with pytest.raises(Conflict, match="running already"):
        v.start(repair=True)
    go.set()
    v.close()
    assert v.report()["state"] in ("done", "stopped")


def test_a_report_lists_so_many_and_counts_the_rest(
        store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check, "LISTED", 2)
    datas = [bytes([i]) for i in range(5)]
    for data in datas:
        store.put_bytes(data)
    store.put_tree([file(f"f{i}", d) for i, d in enumerate(datas)])
    for data in datas:
        store.path_of(sha(data)).unlink()
    report = verifier(store).run(repair=False)
    assert len(report["blobs"]) == 2 and report["unlisted"] == {"blobs": 3}
    assert report["trees"][0]["damaged_files"] == 5 and not report["clean"]
