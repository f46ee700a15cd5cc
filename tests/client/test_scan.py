"""Folder scans: ignore rules, what the entries carry, refused names and links, and
the hash cache that keeps a rescan from reading unchanged files."""

from __future__ import annotations

import logging
import os
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from sync_kit import paths, write

from nai_server.protocol import NaiError
from nai_tui.sync import hashcache
from nai_tui.sync import scan as scanning
from nai_tui.sync.hashcache import HashCache
from nai_tui.sync.push import scan

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

