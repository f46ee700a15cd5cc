"""Who holds which blob and who recorded which tree (DESIGN §6: read rights).

A blob's digest is not a capability: the store answers a caller about a blob only if
that caller sent its bytes (or it is in a tree they may read), and a tree only if they
recorded it or may read it otherwise. The record is an empty file per (user, digest),
laid out like the blobs themselves:

    claims/<user>/sha256/ab/cdef…   this user uploaded the blob
    claims/<user>/trees/ab/cdef…    this user recorded the tree (POST /v1/trees)

One `mknod` per blob (a single system call, no descriptor) keeps the added cost of
receiving a small file to a few microseconds; a claim is created after its blob is in
place, and the receiver's syncfs that makes the blob's name durable makes the claim
durable too. A lookup is one stat. Millions of blobs spread over 256 directories per
user, as in the store.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from nai_server.store.atomic import fsync_dir

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_MODE = 0o400 | stat.S_IFREG


def user_dir_name(user: str) -> str:
    """A path component for a user name: the name itself when it is a plain unix name,
    else '+' and its hex form ('+' starts no plain name, so the two never meet)."""
    return user if _SAFE_NAME.fullmatch(user) else "+" + user.encode().hex()


def user_from_dir_name(name: str) -> str:
    """The user name a path component of `user_dir_name` stands for."""
    if name.startswith("+"):
        try:
            return bytes.fromhex(name[1:]).decode()
        except ValueError:  # not one of ours: shown as it is
            return name
    return name


class Claims:
    """The per-user records under `root/claims`; digests are checked by the caller."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "claims"
        self.root.mkdir(mode=0o700, exist_ok=True)
        self._base = str(self.root)
        self._made: set[str] = set()  # fan-out directories known to exist

    def _path(self, user: str, kind: str, digest: str) -> str:
        return f"{self._base}/{user_dir_name(user)}/{kind}/{digest[:2]}/{digest[2:]}"

    def holds(self, user: str, digest: str) -> bool:
        """True if `user` uploaded the blob `digest`."""
        return os.path.exists(self._path(user, "sha256", digest))

    def has_tree(self, user: str, tree_id: str) -> bool:
        """True if `user` recorded the tree `tree_id`."""
        return os.path.exists(self._path(user, "trees", tree_id))

    def holders(self, digest: str) -> list[str]:
        """The users who uploaded the blob `digest`, sorted: one stat per user, for a
        report on damage (who can send the blob again), not for a hot path."""
        found = []
        with os.scandir(self._base) as users:
            for user in users:
                if os.path.exists(f"{user.path}/sha256/{digest[:2]}/{digest[2:]}"):
                    found.append(user_from_dir_name(user.name))
        return sorted(found)

    def record(self, user: str, digests: Iterable[str]) -> None:
        """Note that `user` holds these blobs (already in place). Not synced here: the
        upload's next syncfs makes the claims durable with the blobs' names."""
        base = f"{self._base}/{user_dir_name(user)}/sha256/"
        made, mknod = self._made, os.mknod
        for digest in digests:  # per blob of an upload: kept to one system call
            fan = base + digest[:2]
            if fan not in made:
                os.makedirs(fan, mode=0o700, exist_ok=True)
                made.add(fan)
            try:
                mknod(f"{fan}/{digest[2:]}", _MODE)
            except FileExistsError:
                pass
            except FileNotFoundError:  # the directory went away under us: make it again
                self._create(f"{fan}/{digest[2:]}")

    def record_tree(self, user: str, tree_id: str) -> None:
        """Note, durably, that `user` recorded the tree `tree_id`."""
        path = self._create(self._path(user, "trees", tree_id))
        if path is not None:
            fsync_dir(Path(path).parent)

    def _create(self, path: str) -> str | None:
        """Create the empty file at `path` (and its directories); None if it existed."""
        parent = path.rpartition("/")[0]
        if parent not in self._made:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            self._made.add(parent)
        try:
            os.mknod(path, _MODE)
        except FileExistsError:
            return None
        except FileNotFoundError:  # the directory went away under us: make it again
            os.makedirs(parent, mode=0o700, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mknod(path, _MODE)
        return path
