"""Unix accounts on this host: a uid's name, a user's account and groups (what a job
runs as)."""

from __future__ import annotations

import errno
import logging
import os
import pwd
import struct


def user_name(uid: int) -> str | None:
    """The unix account name of a uid, or None if it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


class NoAccount(Exception):
    """A job's owner has no unix account here (removed, or the account service did not
    answer): a root daemon then neither runs the job nor reads its files, since doing
    so as itself would do as root what the owner may not."""

    def __init__(self, user: str, what: str) -> None:
        super().__init__(f"no unix account {user!r} on this server (removed, or the account "
                         f"service did not answer); {what}")


def unix_account(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def unix_groups(name: str) -> list[int]:
    """Primary and supplementary gids of a unix user (what a job runs with)."""
    account = unix_account(name)
    if account is None:
        return []
    return os.getgrouplist(name, account.pw_gid)



# POSIX ACLs as Linux stores them (the `system.posix_acl_access` attribute): a version,
# then (tag, permissions, id) entries, sorted by tag.
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_NO_ID = 0xFFFFFFFF
_NO_ACLS: set[int] = set()  # file systems (st_dev) found without them, warned of once


def traversable_by(path: str | os.PathLike[str], uid: int) -> bool:
    """Make the daemon's folder `path` one that `uid` alone may pass through (search
    permission, not listing) and no other account may enter: mode 0700 plus an ACL
    entry for `uid`, so that what is below it is out of other users' reach even where
    its own modes let anyone read (a job's dataset and code, 0555/0444). False where the
    file system has no POSIX ACLs: the folder is then 0711, as before, and anyone who
    knows a name below it may reach that (said once in the daemon's log)."""
    os.chmod(path, 0o700, follow_symlinks=False)
    try:
        _set_acl(path, uid)
    except OSError as exc:
        if exc.errno not in _NO_ACL_ERRORS:
            raise
        os.chmod(path, 0o711, follow_symlinks=False)
        dev = os.lstat(path).st_dev
        if dev not in _NO_ACLS:
            _NO_ACLS.add(dev)
            logging.getLogger("nai.unix").warning(
                "%s: this file system has no POSIX ACLs, so jobs' folders are 0711: "
                "another user who knows a job's id can read its dataset and code (mount "
                "the state folder with ACLs to close that)", path)
        return False
    return True


_NO_ACL_ERRORS = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)


def _set_acl(path: str | os.PathLike[str], uid: int) -> None:
    entries = ((_USER_OBJ, 7, _NO_ID), (_USER, 1, uid), (_GROUP_OBJ, 0, _NO_ID),
               (_MASK, 1, _NO_ID), (_OTHER, 0, _NO_ID))
    acl = struct.pack("<I", _ACL_VERSION) + b"".join(
        struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)
    os.setxattr(path, "system.posix_acl_access", acl, follow_symlinks=False)


def acls_work(folder: str | os.PathLike[str]) -> bool:
    """Whether folders made in `folder` can take the ACL `traversable_by` gives (for
    `nai-server check`)."""
    probe = os.path.join(folder, f".acl-probe-{os.getpid()}")
    os.mkdir(probe, 0o700)
    try:
        _set_acl(probe, 65534)
    except OSError as exc:
        if exc.errno not in _NO_ACL_ERRORS:
            raise
        return False
    finally:
        os.rmdir(probe)
    return True
