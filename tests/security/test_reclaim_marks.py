"""A job directory of an older version was its owner's: whatever they left at the name
of the stderr marks (log.stderr), a link to a file of root's, a hard link to one, a FIFO
or a directory, is taken away when the directory is reclaimed for a run, never followed,
and root's files are left as they were."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nai_server.host import jobdir
from nai_server.host.stderr_marks import MARKS_FILE


def plant(job_dir: Path, kind: str, secret: Path) -> None:
    marks = job_dir / MARKS_FILE
    if kind == "symlink":
        marks.symlink_to(secret)
    elif kind == "hardlink":  # made as root here: what protected_hardlinks=0 allows
        os.link(secret, marks)
    elif kind == "fifo":
        os.mkfifo(marks)
    else:
        marks.mkdir()
        (marks / "inside").symlink_to(secret)


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo", "directory"])
def test_what_stands_at_the_marks_name_is_taken_away_not_followed(
        tmp_path: Path, make_user: Any, kind: str) -> None:
    user = make_user()
    secret = tmp_path / "root-secret"
    secret.write_bytes(b"root's\n")
    os.chmod(secret, 0o600)
    job_dir = tmp_path / "jobs" / "7"
    job_dir.mkdir(parents=True)
    os.chown(job_dir, user.uid, user.gid)  # an older version's: the owner's directory
    plant(job_dir, kind, secret)
    jobdir.reclaim(job_dir)
    assert not os.path.lexists(job_dir / MARKS_FILE)
    st = os.stat(secret)
    assert secret.read_bytes() == b"root's\n" and (st.st_uid, st.st_nlink) == (0, 1)
    assert os.stat(job_dir).st_uid == os.geteuid()
