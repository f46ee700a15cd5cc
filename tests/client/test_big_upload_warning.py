"""Large files in a job's folder are said before anything is uploaded: named, with what
to do instead; a terminal is asked, a script must pass --yes (nai_tui.sync.bigfiles)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nai_server.protocol import Invalid
from nai_tui.sync.bigfiles import big_upload, confirm_big_upload
from nai_tui.sync.hashcache import HashCache
from nai_tui.sync.scan import survey

BIN = Path(sys.executable).parent
MB = 1 << 20


def sparse(path: Path, size: int) -> None:
    """A file of `size` bytes that costs no disk (and hashes fast: zeros)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def _survey(root: Path, tmp_path: Path):
    with HashCache(tmp_path / "hashes.sqlite") as cache:
        return survey(root, cache=cache)


def test_big_new_files_are_named_largest_first(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "train.py").write_text("print(1)\n")
    sparse(root / "model.pt", 60 * MB)
    sparse(root / "ckpt" / "epoch1.pt", 55 * MB)
    big = big_upload(_survey(root, tmp_path))
    assert big is not None
    assert big.biggest == [("model.pt", 60 * MB), ("ckpt/epoch1.pt", 55 * MB)]
    text = big.describe(str(root))
    assert "model.pt (60.0 MiB)" in text and ".naiignore" in text and "nai dataset push" in text

    # Ignored, they are not sent, and nothing is said.
    (root / ".naiignore").write_text("*.pt\n")
    assert big_upload(_survey(root, tmp_path)) is None


def test_many_files_big_together_are_said_too(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    for i in range(3):
        sparse(root / f"shard{i}.npy", 40 * MB)
    big = big_upload(_survey(root, tmp_path))
    assert big is not None and big.new_bytes == 120 * MB and big.new_files == 3
    assert big_upload(_survey(root, tmp_path), total=200 * MB) is None


def test_the_answer_decides(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    sparse(root / "model.pt", 60 * MB)
    folder = _survey(root, tmp_path)
    said: list[str] = []
    confirm_big_upload(True, warn=said.append)(folder)  # --yes: said, and on
    assert len(said) == 1 and "model.pt" in said[0]
    with pytest.raises(Invalid, match="--yes"):  # a script: refused
        confirm_big_upload(False, warn=said.append, interactive=lambda: False)(folder)
    with pytest.raises(Invalid, match="nothing was uploaded"):  # a person says no
        confirm_big_upload(False, warn=said.append, interactive=lambda: True,
                           ask=lambda _: "n")(folder)
    confirm_big_upload(False, warn=said.append, interactive=lambda: True,
                       ask=lambda _: "y")(folder)


def nai(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nai"), *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_submit_from_a_script_needs_yes(env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "train.py").write_text("print('trained')\n")
    sparse(root / "weights.bin", 51 * MB)
    # Written a while ago, as a user's files are: the hash cache trusts no entry for a
    # file changed within 2 s of its hashing (it may change again in that second).
    for path in root.iterdir():
        os.utime(path, (path.stat().st_atime - 60, path.stat().st_mtime - 60))
    before = json.loads(nai(env, "jobs", "--json").stdout)

    refused = nai(env, "submit", str(root), "--command", "python train.py", "--gpus", "0")
    assert refused.returncode == 1, refused.stderr
    assert "weights.bin (51.0 MiB)" in refused.stderr and "--yes" in refused.stderr
    assert refused.stdout == ""
    assert json.loads(nai(env, "jobs", "--json").stdout) == before  # nothing submitted

    sent = nai(env, "submit", str(root), "--command", "python train.py", "--gpus", "0",
               "--yes")
    assert sent.returncode == 0, sent.stderr
    assert "warning:" in sent.stderr and "weights.bin" in sent.stderr
    # Sent once, it is not new any more: the next submit says nothing.
    again = nai(env, "submit", str(root), "--command", "python train.py", "--gpus", "0")
    assert again.returncode == 0, again.stderr
    assert "weights.bin" not in again.stderr
    assert os.path.getsize(root / "weights.bin") == 51 * MB
