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
    blob_inodes = set()
    for e in blobs.get_tree(tree_id):
        if e.kind == "file":
            st = os.stat(blobs.path_of(e.sha256))
            blob_inodes.add((st.st_dev, st.st_ino))
    give_all(dest, uid, owner_gid, keep=blob_inodes)


def give_all(root: Path, uid: int, gid: int, keep: set[tuple[int, int]] | None = None) -> None:
    """Give the owner every directory, link and file under `root`, but for the inodes in
    `keep` (the store's blobs: chown would hand the blob itself, for every job and
    version that shares it, to this job's user). Files given are made writable by their
    owner; no symlink is followed."""
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
            if keep is not None and (st.st_dev, st.st_ino) in keep:
                continue
            os.chown(path, uid, gid, follow_symlinks=False)
            if keep is not None and not os.path.islink(path):
                os.chmod(path, (st.st_mode & 0o7777) | 0o200)
