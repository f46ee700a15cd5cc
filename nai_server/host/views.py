"""Dataset and model versions laid out once per user, for all their jobs.

A job's dataset appears in its directory as read-only hard links to the blobs
(`mounts.mount`): one link per file, so a dataset of a million files took every job
that used it a minute or more to start, its GPUs held and idle meanwhile. A view is
that layout made once, for one user and one tree, and each job of theirs on that
version gets a symlink to it instead (`link`): a start costs one symlink however large
the dataset.

    <state>/views/<user>/<tree_id>.<token>/       the view: dirs 0555, files 0444, root's
    <state>/views/<user>/<tree_id>.<token>.use    its last use (mtime) and its stamp
    <state>/views/<user>/.<tree_id>.<token>.new   one being built (complete, then renamed)

A view is the daemon's: its folders and links are root's and read-only, so no job can
change what another job of the same user reads. Other users cannot reach it: a user's
folder is the daemon's, 0700, with an ACL that lets that user alone pass through
(`unix.traversable_by`, as for job directories); and a view's name ends in a random
token that only its user's jobs are shown (through their symlink). A personal server's
jobs run as the daemon's own user, who owns the view and could change it (chmod it, or
as root move things in it): a view is used again only if none of its folders changed
since it was made (their ctimes, against the stamp taken then), else it is made anew;
what a job does to a file's bytes is done to the blob itself, which the store's verifier
finds. Views are kept while a running job uses them and for `KEEP_SECONDS` after their
last use, at most `KEEP_PER_USER` a user (`sweep`); removing one never follows a link
(`user_folders.remove`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Collection
from pathlib import Path

from nai_server.host import mounts, unix, user_folders
from nai_server.store.blobs import BlobStore
from nai_server.store.claims import user_dir_name, user_from_dir_name

log = logging.getLogger("nai.views")

KEEP_SECONDS = 7 * 24 * 3600.0  # a view unused this long goes
KEEP_PER_USER = 16  # beyond this many views, a user's least recently used go first
SWEEP_TIMEOUT = 600.0  # seconds one view's removal may take
TREES_KEPT = 64  # trees whose folder lists are kept in memory (a tree never changes)


class Views:
    """The views under `root` (`<state>/views`), built from `blobs`."""

    def __init__(self, root: Path, blobs: BlobStore, personal: bool) -> None:
        self.root = root
        self.blobs = blobs
        self.mode = 0o700 if personal else 0o711  # passed through, never listed
        root.mkdir(mode=self.mode, parents=True, exist_ok=True)
        os.chmod(root, self.mode)
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._dirs: dict[str, tuple[str, ...]] = {}  # tree id -> its folders; oldest first

    def _lock(self, user: str, tree_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((user, tree_id), threading.Lock())

    def _folder(self, user: str, uid: int | None) -> Path:
        """`user`'s folder of views: the daemon's, and only `uid` (their account, None on
        a personal server) may pass through it (unix.traversable_by)."""
        folder = self.root / user_dir_name(user)
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        if uid is not None:
            unix.traversable_by(folder, uid)
        return folder

    def link(self, user: str, uid: int | None, tree_id: str, dest: Path) -> None:
        """Make `dest` a symlink to `user`'s view of the tree, built if they have none;
        `uid`: their account, who alone may reach it (None: the daemon's own)."""
        os.symlink(os.path.abspath(self.view(user, tree_id, uid)), dest)

    def view(self, user: str, tree_id: str, uid: int | None = None) -> Path:
        """`user`'s view of the tree (its last use noted: now), built if there is none
        or if the one there was changed."""
        folder = self._folder(user, uid)
        with self._lock(user, tree_id):
            found = _find(folder, tree_id)
            if found is not None and self._intact(found, tree_id):
                os.utime(_use_file(found))  # its last use, for `sweep`
                return found
            if found is not None:
                log.warning("view %s was changed since it was made; made anew", found)
                self._discard(found)
            name = f"{tree_id}.{secrets.token_hex(16)}"
            building = folder / f".{name}.new"
            try:
                mounts.mount(self.blobs, tree_id, building)
                os.rename(building, folder / name)
                stamp = max(os.lstat(d).st_ctime_ns for d in _dirs(folder / name,
                                                                  self._tree_dirs(tree_id)))
                _use_file(folder / name).write_text(str(stamp))
            except BaseException:
                user_folders.remove(building, SWEEP_TIMEOUT)
                raise
            return folder / name

    def _tree_dirs(self, tree_id: str) -> tuple[str, ...]:
        """The folders of a tree, from its manifest (the parents of its entries). A tree
        never changes, so the list is kept: each start of a job on a million-file
        dataset would otherwise walk a million entries to check its view's folders."""
        found = self._dirs.get(tree_id)
        if found is not None:
            return found
        dirs: set[str] = set()
        for entry in self.blobs.get_tree(tree_id):
            parent = entry.path.rpartition("/")[0]
            while parent and parent not in dirs:
                dirs.add(parent)
                parent = parent.rpartition("/")[0]
        found = tuple(sorted(dirs))
        with self._guard:  # builds run in several lanes at once
            self._dirs[tree_id] = found
            while len(self._dirs) > TREES_KEPT:
                del self._dirs[next(iter(self._dirs))]
        return found

    def _intact(self, view: Path, tree_id: str) -> bool:
        """None of the view's folders changed (entries, mode, owner) since its stamp: one
        lstat a folder, not a file."""
        try:
            stamp = int(_use_file(view).read_text())
            for path in _dirs(view, self._tree_dirs(tree_id)):
                st = os.lstat(path)
                if (st.st_ctime_ns > stamp or not stat.S_ISDIR(st.st_mode)
                        or stat.S_IMODE(st.st_mode) != mounts.READ_ONLY_DIR
                        or st.st_uid != os.geteuid()):
                    return False
        except (OSError, ValueError):
            return False
        return True

    def _discard(self, view: Path) -> None:
        aside = view.with_name(f".{view.name}.old")
        os.rename(view, aside)
        _use_file(view).unlink(missing_ok=True)
        user_folders.remove(aside, SWEEP_TIMEOUT)

    def sweep(self, in_use: Collection[tuple[str, str]], now: float | None = None) -> int:
        """Remove the views no active job uses (`in_use`: (user, tree_id) pairs) that
        were last used more than KEEP_SECONDS ago or are beyond KEEP_PER_USER a user,
        and what a build cut short left; how many went. Outside the service lock: a
        view is removed under its own lock, and only if no job took it up meanwhile."""
        now = time.time() if now is None else now
        used = {(user_dir_name(u), t) for u, t in in_use}
        removed = 0
        try:
            folders = [f for f in os.scandir(self.root) if f.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return 0
        for folder in folders:
            views = []
            for entry in os.scandir(folder.path):
                if entry.name.startswith("."):  # a build or a removal cut short
                    if entry.stat(follow_symlinks=False).st_mtime < now - 3600:
                        removed += user_folders.remove(Path(entry.path), SWEEP_TIMEOUT)
                    continue
                if not entry.is_dir(follow_symlinks=False):
                    continue  # a view's .use file, removed with it
                tree_id = entry.name.partition(".")[0]
                if (folder.name, tree_id) not in used:
                    views.append((_last_use(Path(entry.path)), tree_id, Path(entry.path)))
            views.sort(reverse=True)  # the most recently used first
            for rank, (last, tree_id, path) in enumerate(views):
                if rank < KEEP_PER_USER and last >= now - KEEP_SECONDS:
                    continue
                with self._lock(user_from_dir_name(folder.name), tree_id):
                    if not path.exists() or _last_use(path) != last:
                        continue  # taken up (or made anew) since it was looked at
                    self._discard(path)
                removed += 1
        return removed


def _find(folder: Path, tree_id: str) -> Path | None:
    prefix = f"{tree_id}."
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False):
                return Path(entry.path)
    return None


def _use_file(view: Path) -> Path:
    return view.with_name(f"{view.name}.use")


def _last_use(view: Path) -> float:
    try:
        return os.stat(_use_file(view), follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return 0.0  # made by a daemon killed before it noted the view's stamp


def _dirs(view: Path, tree_dirs: tuple[str, ...]) -> list[Path]:
    return [view, *(view / d for d in tree_dirs)]
