"""Unix accounts on this host: a uid's name, a user's account and groups (what a job
runs as)."""

from __future__ import annotations

import os
import pwd


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

