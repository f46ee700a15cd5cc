"""user_folders.remove, which removes what the daemon takes out of job directories,
walks only the daemon's own folders, through descriptors: a link is unlinked, never
followed; a FIFO is unlinked, never opened; a folder of a user's is emptied as that
user; and a folder of root's that anyone may write in (a sticky /tmp-like folder an
older version's job owner could have moved into their directory) holds others'
files, which root must not remove for them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nai_server.host import user_folders

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")


@pytest.fixture
def state() -> Iterator[Path]:
    """A folder of root's that its users may pass through (as jobs/ is)."""
    where = Path(tempfile.mkdtemp(prefix="nai-discard-"))
    os.chmod(where, 0o711)
    yield where
    shutil.rmtree(where, ignore_errors=True)


def test_only_the_daemons_own_folders_are_walked(state: Path, make_user: Any) -> None:
    alice, bob = make_user(), make_user()
    tmp_path = state
    secret = tmp_path / "root-secret"
    secret.write_text("root's\n")
    gone = tmp_path / "discarded"
    (gone / "mount" / "sub").mkdir(parents=True, mode=0o755)
    os.chmod(gone, 0o711)
    (gone / "mount" / "sub" / "blob").write_text("x")
    os.chmod(gone / "mount" / "sub", 0o555)
    (gone / "mount" / "link").symlink_to(secret)
    os.mkfifo(gone / "mount" / "fifo")
    shared = gone / "shared"  # root's, sticky, anyone may write in it
    shared.mkdir()
    os.chmod(shared, 0o1777)
    bobs = shared / "bobs.txt"
    bobs.write_text("bob's work\n")
    os.chown(bobs, bob.uid, bob.gid)
    hers = gone / "output"
    hers.mkdir(mode=0o700)
    os.chown(hers, alice.uid, alice.gid)
    subprocess.run(["mkdir", "-p", str(hers / "a" / "b")], user=alice.uid, group=alice.gid,
                   extra_groups=[], check=True)

    assert not user_folders.remove(gone, 30)  # the shared folder stays
    assert bobs.read_text() == "bob's work\n"
    assert secret.read_text() == "root's\n"
    assert sorted(os.listdir(gone)) == ["shared"]  # the rest went
