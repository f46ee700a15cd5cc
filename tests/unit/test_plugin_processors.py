"""The first-party dataset processors, called as a processing job calls them: `split`
is deterministic and sized by its ratios, `dedupe` keeps the first of each content."""

from __future__ import annotations

from pathlib import Path

import pytest

from nai_plugins import dedupe, split


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def listing(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_split_files_is_deterministic_and_sized_by_the_ratios(tmp_path: Path) -> None:
    source = tree(tmp_path / "src", {f"img/{i:02}.txt": str(i) for i in range(20)})
    outs = []
    for n, seed in enumerate(("7", "7", "8")):
        target = tmp_path / f"out{n}"
        target.mkdir()
        report = split.nai_process_dataset(source=source, target=target,
                                           options={"seed": seed, "ratios": "0.5,0.25,0.25"})
        assert report["files"] == {"train": 10, "val": 5, "test": 5}
        outs.append(listing(target))
    assert outs[0] == outs[1] and outs[0] != outs[2]
    parts = {rel.split("/")[0] for rel in outs[0]}
    assert parts == {"train", "val", "test"}
    # Every file once, whole, at its path under its part.
    assert sorted(rel.split("/", 1)[1] for rel in outs[0]) == sorted(listing(source))


def test_split_rows_keeps_the_csv_header_in_each_part(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i % 2}\n" for i in range(10))
    source = tree(tmp_path / "src", {"t.csv": "x,label\n" + rows, "README": "hi"})
    target = tmp_path / "out"
    target.mkdir()
    report = split.nai_process_dataset(source=source, target=target,
                                       options={"by": "rows", "ratios": "8,2", "names": "a,b"})
    assert report["rows"] == {"a": 8, "b": 2}
    a, b = (target / "a" / "t.csv").read_text(), (target / "b" / "t.csv").read_text()
    assert a.startswith("x,label\n") and b.startswith("x,label\n")
    assert sorted(a.splitlines()[1:] + b.splitlines()[1:]) == sorted(rows.splitlines())
    assert (target / "b" / "README").read_text() == "hi"


@pytest.mark.parametrize("options", [{"ratios": "a,b,c"}, {"ratios": "1,1"},
                                     {"names": "x,x,y"}, {"names": "../up,b,c"},
                                     {"by": "bytes"}])
def test_split_refuses_bad_options(tmp_path: Path, options: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        split.nai_process_dataset(source=tmp_path, target=tmp_path, options=options)


def test_dedupe_keeps_the_first_of_each_content(tmp_path: Path) -> None:
    source = tree(tmp_path / "src", {"a/1.txt": "same", "b/2.txt": "same", "c.txt": "other",
                                     "d.jsonl": '{"x": 1}\n{"x": 2}\n{"x": 1}\n'})
    target = tmp_path / "out"
    target.mkdir()
    report = dedupe.nai_process_dataset(source=source, target=target, options={"by": "rows"})
    assert listing(target) == {"a/1.txt": "same", "c.txt": "other",
                               "d.jsonl": '{"x": 1}\n{"x": 2}\n'}
    assert report == {"kept": 3, "dropped": 1, "dropped_files": ["b/2.txt"],
                      "dropped_rows": 1}
