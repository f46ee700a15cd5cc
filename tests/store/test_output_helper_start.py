"""The output helper starts for every job that ends (a tiny job on Slurm pays for it as
much as for its own run): it imports neither `json` nor `typing`, which on a loaded
host took as long as Python's own start, and its hand-written JSON reads back as
json.dumps' would, odd file names included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from nai_server.core.trees import UNLIMITED
from nai_server.host import output_walk, outputs
from nai_server.store.blobs import BlobStore

ODD = ["plain.txt", 'quote"back\\slash', "new\nline\ttab", "ünï", "emoji-\U0001F600",
       os.fsdecode(b"bytes-\xff\xfe")]
VALID = ["plain.txt", 'quote"d', "ünï", "emoji-\U0001F600", "sp ace", "sub/dir/f"]


def test_the_helper_imports_neither_json_nor_typing(tmp_path: Path) -> None:
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "a").write_text("x")
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", output_walk.__file__,
         str(tmp_path / "output"), "100"], capture_output=True, check=True)
    imported = {line.split("|")[-1].strip() for line in done.stderr.decode().splitlines()}
    assert not imported & {"json", "typing", "re", "enum"}, imported
    assert json.loads(done.stdout.split(b"\n")[0])["entries"][0]["path"] == "a"


def test_its_json_reads_back_as_json_dumps_would() -> None:
    for value in [*ODD, {"entries": [{"path": p, "size": 3, "mode": 0o644} for p in ODD]},
                  {"error": "x: is \"odd\""}, [True, False, None, 0, -1]]:
        text = output_walk._json(value)
        assert text.isascii()
        assert json.loads(text) == value


def test_odd_names_are_collected_under_their_own_names(tmp_path: Path) -> None:
    out = tmp_path / "output"
    out.mkdir()
    (out / "sub" / "dir").mkdir(parents=True)
    for index, name in enumerate(VALID):
        (out / name).write_text(str(index))
    blobs = BlobStore(tmp_path / "blobs")
    tree = outputs.collect(blobs, out, UNLIMITED, outputs.RunAs(), timeout=30)
    listed = {e.path: blobs.open(e.sha256).read() for e in blobs.get_tree(tree)}
    assert listed == {name: str(i).encode() for i, name in enumerate(VALID)}
