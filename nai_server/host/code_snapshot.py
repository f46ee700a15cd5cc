"""A job's code/ from its uploaded tree: hard links to the blobs, or a private copy.

Every job used to get a full copy of its code: two jobs with a 200 MB checkpoint in the
folder cost 400 MB more than the store already held. Where it is safe, code/ is now a
hard-link farm: its directories are the job owner's (the job can create files, and
replace or delete the ones it was given), its files are the store's own blobs, which
are root's and mode 0444, so the job can read them and can neither write through a
link nor chmod it (only the owner of an inode may change its mode). Nothing is copied
but executables (a link cannot carry its own mode) and blobs on another file system;
those copies are the job's own, writable, as before.

It is safe only where the job runs as another user than the one owning the store: a
personal server's jobs run as its own user, who owns the blobs and could chmod them
back to writable, so they (and a job that runs as root) get a copy; so does a spec with
`code: writable`, for scripts that change their own files in place.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from nai_server.store.blobs import BlobStore

WRITABLE = "writable"  # the spec's `code:` value asking for a private copy


def linked(uid: int | None, writable: bool) -> bool:
    """Whether a job running as `uid` (None: as the daemon's own user) gets links."""
    return not writable and uid is not None and uid != 0 and os.geteuid() == 0


def snapshot(blobs: BlobStore, tree_id: str, dest: Path, uid: int | None, gid: int | None,
             *, writable: bool) -> None:
    """Write the tree out at `dest` (missing or empty), owned as `linked` decides."""
    owner_gid = gid if gid is not None else -1
    if not linked(uid, writable):
        blobs.materialise(tree_id, dest, link=False)
        if uid is not None:
            give_all(dest, uid, owner_gid)
        return
    assert uid is not None
    blobs.materialise(tree_id, dest, link=True)
    give_all(dest, uid, owner_gid, linked=True)


def give_all(root: Path, uid: int, gid: int, *, linked: bool = False) -> None:
    """Give the owner every directory, symlink and file under `root` (no symlink is
    followed). `linked`: but for the hard links to the store's blobs, the files with
    more than one link (the copies just made have one): chown would hand the blob
    itself, shared by every job and version that holds it, to this job's user. The
    copies given are made writable by their owner."""
    os.chown(root, uid, gid, follow_symlinks=False)
    os.chmod(root, 0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            os.chown(path, uid, gid, follow_symlinks=False)
            if not os.path.islink(path):
                os.chmod(path, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if linked and stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                continue  # a blob
            os.chown(path, uid, gid, follow_symlinks=False)
            if linked and stat.S_ISREG(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode) | 0o200)
