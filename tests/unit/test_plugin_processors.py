"""The first-party dataset processors, called as a processing job calls them: `split`
is deterministic and sized by its ratios, `dedupe` keeps the first of each content."""

from __future__ import annotations

import json
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


def test_split_rows_stratified_keeps_each_labels_proportion(tmp_path: Path) -> None:
    # 20 cats and 10 dogs: a plain cut may put every dog in one part; stratified, each
    # part has cats and dogs 2:1, in the CSV (by column) and the JSONL (by key) alike.
    labels = ["cat"] * 20 + ["dog"] * 10
    csv_rows = "".join(f'{i},"{label}"\n' for i, label in enumerate(labels))
    jsonl = "".join(json.dumps({"i": i, "y": label}) + "\n" for i, label in enumerate(labels))
    source = tree(tmp_path / "src", {"t.csv": "x,y\n" + csv_rows, "t.jsonl": jsonl})
    outs = []
    for n in range(2):
        target = tmp_path / f"out{n}"
        target.mkdir()
        report = split.nai_process_dataset(source=source, target=target, options={
            "by": "rows", "ratios": "0.6,0.2,0.2", "stratify": "y", "seed": "5"})
        assert report["rows"] == {"train": 36, "val": 12, "test": 12}
        assert report["stratify"] == "y"
        outs.append(listing(target))
    assert outs[0] == outs[1]
    for part, cats, dogs in (("train", 12, 6), ("val", 4, 2), ("test", 4, 2)):
        table = outs[0][f"{part}/t.csv"]
        assert (table.count('"cat"'), table.count('"dog"')) == (cats, dogs), part
        rows = [json.loads(r)["y"] for r in outs[0][f"{part}/t.jsonl"].splitlines()]
        assert (rows.count("cat"), rows.count("dog")) == (cats, dogs), part
    every = [r for p in ("train", "val", "test") for r in outs[0][f"{p}/t.csv"].splitlines()[1:]]
    assert sorted(every) == sorted(csv_rows.splitlines())


def test_split_files_stratified_by_folder(tmp_path: Path) -> None:
    files = {**{f"cat/{i}.png": str(i) for i in range(8)},
             **{f"dog/{i}.png": str(i) for i in range(4)}}
    source = tree(tmp_path / "src", files)
    target = tmp_path / "out"
    target.mkdir()
    report = split.nai_process_dataset(source=source, target=target, options={
        "ratios": "3,1", "names": "train,val", "stratify": "folder"})
    assert report["files"] == {"train": 9, "val": 3}
    got = listing(target)
    assert sum(rel.startswith("val/dog/") for rel in got) == 1
    assert sum(rel.startswith("val/cat/") for rel in got) == 2


@pytest.mark.parametrize("options", [{"ratios": "a,b,c"}, {"ratios": "1,1"},
                                     {"names": "x,x,y"}, {"names": "../up,b,c"},
                                     {"by": "bytes"}, {"stratify": "label"}])
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
