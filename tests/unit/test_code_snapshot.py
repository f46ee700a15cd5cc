"""Which jobs get their code as links to the blobs, and the spec key that opts out."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nai_server.core.spec import SpecError, parse_spec, spec_from_dict
from nai_server.core.trees import Entry
from nai_server.host import code_snapshot
from nai_server.store.blobs import BlobStore


def test_the_spec_says_linked_or_writable() -> None:
    assert spec_from_dict({"command": "x"}).code == "linked"
    assert parse_spec("command: x\ncode: writable\n").code == "writable"
    with pytest.raises(SpecError, match=r"code: must be linked .* or writable"):
        parse_spec("command: x\ncode: copy\n")


def test_only_jobs_of_another_user_than_the_stores_get_links() -> None:
    root = os.geteuid() == 0
    assert code_snapshot.linked(1000, writable=False) is root
    assert code_snapshot.linked(1000, writable=True) is False
    assert code_snapshot.linked(None, writable=False) is False  # a personal server's job
    assert code_snapshot.linked(0, writable=False) is False  # a job run as root


def test_a_copy_is_the_jobs_own_and_writable(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    data = b"print(1)\n"
    tree = blobs.put_tree([Entry("src/a.py", "file", len(data), 0o644, blobs.put_bytes(data)),
                           Entry("run.sh", "file", len(data), 0o755, blobs.put_bytes(data))])
    dest = tmp_path / "code"
    code_snapshot.snapshot(blobs, tree, dest, None, None, writable=False)
    for name in ("src/a.py", "run.sh"):
        st = (dest / name).stat()
        assert st.st_nlink == 1 and st.st_mode & stat.S_IWUSR, name
    assert (dest / "run.sh").stat().st_mode & 0o100
