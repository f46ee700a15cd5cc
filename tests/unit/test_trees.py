"""Manifest rules (DESIGN §6): every unsafe tree is refused, naming the path."""

from __future__ import annotations

import hashlib
import json
import random
import stat
from typing import Any

import pytest

from nai_server.core.trees import (
    UNLIMITED,
    Entry,
    Limits,
    TreeError,
    _path_rules,
    canonical_json,
    diff_missing,
    manifest_to_json,
    parse_manifest,
    path_problem,
    select,
    tree_id,
)

LIMITS = Limits(max_file_size=1000, max_entries=10, max_total_size=2500)
D1, D2, D3 = "1" * 64, "2" * 64, "a" * 64


def f(path: str, size: int = 1, mode: int = 0o644, digest: str = D1) -> dict[str, Any]:
    return {"path": path, "size": size, "mode": mode, "sha256": digest}


def link(path: str, target: str) -> dict[str, Any]:
    return {"path": path, "kind": "symlink", "target": target}


def refused(raw: list[Any], limits: Limits = LIMITS) -> TreeError:
    with pytest.raises(TreeError) as caught:
        parse_manifest(raw, limits)
    return caught.value


def test_a_good_manifest_round_trips() -> None:
    raw = [f("train.py", mode=0o100755), f("data/x.bin", size=7, digest=D2), link("cur", "data")]
    entries = parse_manifest(raw, LIMITS)
    assert entries[0] == Entry("train.py", "file", 1, 0o755, D1, "")
    assert entries[2] == Entry("cur", "symlink", 0, 0o777, "", "data")
    assert parse_manifest(manifest_to_json(entries), LIMITS) == entries


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "C:\\x", "C:x", "a\\b", "", "a/", "a//b", "./a", "a/./b", "a\0b", "x" * 4097],
)
def test_unsafe_paths_are_refused_naming_them(path: str) -> None:
    err = refused([f("ok"), f(path)])
    assert err.problems[0][0] == (path or "entry #1")
    assert err.path == (path or "entry #1")


@pytest.mark.parametrize("path", ["..", "../x", "a/../../x", "a/.."])
def test_dotdot_is_refused(path: str) -> None:
    err = refused([f(path)])
    assert err.problems == [(path, "path may not contain '..'")]
    assert path in str(err)


def test_every_problem_is_collected() -> None:
    err = refused([f("/abs"), f("../up"), f("fine"), f("bad", digest="XYZ")])
    assert [p for p, _ in err.problems] == ["/abs", "../up", "bad"]


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        (stat.S_IFCHR | 0o666, "device files / special files are not allowed"),
        (stat.S_IFBLK | 0o660, "device files / special files are not allowed"),
        (stat.S_IFIFO | 0o644, "device files / special files are not allowed"),
        (stat.S_IFSOCK | 0o755, "device files / special files are not allowed"),
        (stat.S_IFDIR | 0o755, "directories are implied by paths; do not list them"),
    ],
)
def test_special_files_are_refused(mode: int, why: str) -> None:
    assert refused([f("dev/null", mode=mode)]).problems == [("dev/null", why)]


def test_setuid_bits_are_dropped_and_st_mode_accepted() -> None:
    (entry,) = parse_manifest([f("run.sh", mode=stat.S_IFREG | 0o4755)], LIMITS)
    assert entry.mode == 0o755


def test_oversize_file_is_refused_with_sizes() -> None:
    err = refused([f("big.bin", size=2000)])
    assert err.problems == [("big.bin", "file is 2.0 KiB, the limit is 1000 B")]


def test_total_size_is_capped() -> None:
    err = refused([f(f"f{i}", size=900) for i in range(3)])
    assert err.problems == [("", "tree is 2.6 KiB, the limit is 2.4 KiB")]
    assert err.path is None


def test_too_many_entries() -> None:
    err = refused([f(f"f{i}") for i in range(11)])
    assert "11 entries, the limit is 10" in str(err)


def test_duplicates_are_refused() -> None:
    assert refused([f("a"), f("a", digest=D2)]).problems == [("a", "listed more than once")]


def test_a_file_cannot_also_be_a_directory() -> None:
    err = refused([f("a"), f("a/b")])
    assert err.problems == [("a", "is a file but also the directory of a/b")]
    # A symlink as a parent would let a write through it land anywhere.
    assert refused([link("d", "x"), f("d/f")]).path == "d"


@pytest.mark.parametrize(
    ("links", "bad"),
    [
        ([link("l", "/etc")], "l"),
        ([link("l", "..")], "l"),
        ([link("a/l", "../../x")], "a/l"),
        ([link("a/b/l", "../c/../../..")], "a/b/l"),
        # Lexically inside, but `c` is the root, so `c/..` is its parent.
        ([link("c", "."), link("l", "c/..")], "l"),
        ([link("up", ".."), link("l", "up/x")], "up"),
    ],
)
def test_symlinks_leaving_the_tree_are_refused(links: list[dict[str, Any]], bad: str) -> None:
    err = refused([f("x"), *links])
    assert err.path == bad
    assert "symlink leaves the tree" in err.problems[0][1]


def test_symlinks_inside_the_tree_are_fine() -> None:
    raw = [f("data/x"), link("a/b/l", "../../data/x"), link("here", "."), link("dangling", "nope")]
    assert len(parse_manifest(raw, LIMITS)) == 4


def test_symlink_loops_are_refused() -> None:
    err = refused([link("a", "b"), link("b", "a")])
    assert "symlink loop" in err.problems[0][1]


def test_bad_digest_and_size() -> None:
    err = refused([f("a", digest=D3.upper()), f("b", size=-1), {"path": "c", "sha256": D1}])
    assert [p for p, _ in err.problems] == ["a", "b", "c"]


def test_tree_id_is_stable_and_content_sensitive() -> None:
    a = parse_manifest([f("x"), f("y", digest=D2)], LIMITS)
    b = parse_manifest([f("y", digest=D2), f("x", mode=0o100644)], LIMITS)
    assert tree_id(a) == tree_id(b)  # order and st_mode type bits do not matter
    assert len(tree_id(a)) == 64
    changed = parse_manifest([f("x", mode=0o755), f("y", digest=D2)], LIMITS)
    assert tree_id(changed) != tree_id(a)  # the executable bit does


def test_the_quick_path_check_agrees_with_the_rules() -> None:
    # path_problem accepts common paths without running every rule; it must never
    # accept one the rules refuse.
    odd = [".", "..", "a/.", "a/..", "./a", "a/./b", ".hidden", "a/.git/x", "a//b", "/abs",
           "a/", "", "C:x", "c:/x", "a:b", "x" * 255, "x" * 256, f"{'a/' * 2047}a",
           f"{'a/' * 2048}a", "a\\b", "a\0b", "é", "a b", "a/b-c_d.e+f=g,h@i%j", "-", "_"]
    rng = random.Random(7)
    alphabet = "ab./-_:\\ \0é%\n\t\x01\x1f\x7f"
    odd += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
            for _ in range(3000)]
    for path in odd:
        assert path_problem(path) == _path_rules(path), path


def test_the_canonical_form_is_json_dumps_sorted_and_compact() -> None:
    # Tree ids must never move: the form is pinned to what json.dumps writes, for
    # names that need escaping, non-ASCII text, and line separators JSON leaves alone.
    odd = ["quote\"d", "under_score", "é/ü/日本/😀",
           "sep\u2028\u2029", "plain/name.py"]
    raw = [f(name, size=i, mode=0o755 if i % 2 else 0o644) for i, name in enumerate(odd)]
    raw += [link("link\u2028", "é/../plain\t\\x"), link("a/l", "../sep\u2028\u2029"),
            link("ctl", "tab\tnew\nline\x01\x1f\x7f")]  # targets may hold them
    entries = parse_manifest(raw, UNLIMITED)
    expected = json.dumps(manifest_to_json(sorted(entries, key=lambda e: e.path)),
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(entries) == expected.encode("utf-8")
    assert tree_id(entries) == hashlib.sha256(expected.encode("utf-8")).hexdigest()


def test_diff_missing_is_unique_and_ordered() -> None:
    entries = parse_manifest([f("a", digest=D3), f("b", digest=D1), f("c", digest=D3)], LIMITS)
    assert diff_missing(entries, lambda d: False) == [D3, D1]
    assert diff_missing(entries, lambda d: d == D3) == [D1]


def test_select_by_file_or_directory() -> None:
    entries = parse_manifest([f("out/a"), f("out/b/c"), f("outer"), f("x")], LIMITS)
    assert [e.path for e in select(entries, "out")] == ["out/a", "out/b/c"]
    assert [e.path for e in select(entries, "out/")] == ["out/a", "out/b/c"]
    assert [e.path for e in select(entries, "out/a")] == ["out/a"]
    assert select(entries, "") == entries
    with pytest.raises(TreeError):
        select(entries, "../out")


def test_path_problem_accepts_ordinary_names() -> None:
    assert path_problem("src/model v2/ünï.py") is None
    assert path_problem("a/" + "x" * 256) == "path component is longer than 255 bytes"


def test_manifest_json_has_every_entry_field() -> None:
    """manifest_to_json is written out field by field: it must not miss one."""
    import dataclasses

    from nai_server.core.trees import Entry, manifest_to_json

    entry = Entry(path="a", kind="file", size=1, mode=0o644, sha256="0" * 64)
    assert manifest_to_json([entry]) == [dataclasses.asdict(entry)]


@pytest.mark.parametrize("path", ["a\nb", "dir/x\ty", "bell\x07", "esc\x1b[31m", "del\x7f",
                                  "cr\r", "\x1f"])
def test_control_characters_in_paths_are_refused(path: str) -> None:
    assert "control character" in (path_problem(path) or "")
    with pytest.raises(TreeError, match="control character"):
        parse_manifest([f(path)], LIMITS)
