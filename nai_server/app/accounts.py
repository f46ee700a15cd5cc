"""Use cases for identity, users, groups, quotas and drain (the daemon's admin side)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from nai_server.host import unix
from nai_server.protocol import (
    Conflict,
    Forbidden,
    GroupInfo,
    Invalid,
    NotFound,
    Quota,
    Unauthorized,
    UserInfo,
)
from nai_server.store.atomic import CommitLock
from nai_server.store.db import TinyDbStore


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a unix socket connection."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class Caller:
    """An authenticated NAI user, as resolved from a connection's peer credentials."""

    user: str
    uid: int
    admin: bool
    groups: tuple[str, ...] = field(default=())


class Accounts:
    """Users, groups, quotas and the drain switch, kept in the store."""

    def __init__(
        self, store: TinyDbStore, lock: CommitLock, *, personal: bool, admins_group: str,
        clock: Any,
    ) -> None:
        self.store = store
        self.lock = lock
        self.personal = personal
        self.admins_group = admins_group
        self.clock = clock
        self.owner_uid = os.getuid()
        self.owner = unix.user_name(self.owner_uid) or str(self.owner_uid)
        self._callers: dict[int, Caller] = {}
        self._rollbacks = store.rollbacks
        with lock:
            if store.get_group(admins_group) is None:
                store.add_group(self._group_doc(admins_group))

    # --- identity ---------------------------------------------------------------------

    def resolve(self, peer: Peer | None) -> Caller:
        """Map the socket peer to a NAI user, or refuse with a message that says why.

        Answers are cached per uid until users or groups change: this runs on every
        request, and the account database and NSS need not be asked each time."""
        if peer is None:
            raise Unauthorized("no peer credentials: connect through the daemon's unix socket")
        if self._rollbacks != self.store.rollbacks:  # an account change may have been undone
            self._rollbacks = self.store.rollbacks
            self._changed()
        cache = self._callers
        caller = cache.get(peer.uid)
        if caller is None:
            caller = self._resolve(peer)
            if cache is self._callers:  # no account change meanwhile
                cache[peer.uid] = caller
        return caller

    def _changed(self) -> None:
        self._callers = {}

    def _resolve(self, peer: Peer) -> Caller:
        name = unix.user_name(peer.uid)
        if self.personal:
            if peer.uid != self.owner_uid:
                raise Forbidden(
                    f"this is the personal nai server of {self.owner}; uid {peer.uid} "
                    f"({name or 'no account'}) may not use it. Start your own with "
                    f"`nai-server run --personal`."
                )
            return Caller(self.owner, peer.uid, True, self._groups_of(self.owner))
        if peer.uid == 0:
            return Caller(name or "root", 0, True, self._groups_of(name or "root"))
        if name is None:
            raise Forbidden(f"uid {peer.uid} has no unix account name; ask an admin")
        with self.lock:
            user = self.store.get_user(name)
        if user is None:
            raise Forbidden(
                f"unix user {name!r} is not registered with nai on this server; "
                f"ask an admin to run: nai-admin user add {name}"
            )
        groups = self._groups_of(name)
        return Caller(name, peer.uid, self.admins_group in groups, groups)

    def caller_for(self, user: str) -> Caller:
        """The user as a Caller, without a connection: what a job acts as when the
        daemon registers its outputs for it."""
        groups = self._groups_of(user)
        account = unix.unix_account(user)
        uid = account.pw_uid if account is not None else -1
        admin = (self.personal and user == self.owner) or uid == 0 or (
            self.admins_group in groups)
        return Caller(user, uid, admin, groups)

    def _groups_of(self, user: str) -> tuple[str, ...]:
        with self.lock:
            return tuple(g["name"] for g in self.store.list_groups() if user in g["members"])

    @staticmethod
    def require_admin(caller: Caller) -> None:
        if not caller.admin:
            raise Forbidden(
                f"{caller.user} is not an admin; admins are root and members of the "
                f"'admins' group (nai-admin group add-member admins {caller.user})"
            )

    # --- users ------------------------------------------------------------------------

    def _user_info(self, doc: dict[str, Any]) -> UserInfo:
        groups = list(self._groups_of(doc["name"]))
        account = unix.unix_account(doc["name"])
        return UserInfo(
            name=doc["name"],
            uid=account.pw_uid if account else None,
            admin=self.admins_group in groups or doc["name"] == "root",
            groups=groups,
            quota=Quota(**doc.get("quota", {})),
            created_at=doc["created_at"],
        )

    def _user(self, name: str) -> dict[str, Any]:
        doc = self.store.get_user(name)
        if doc is None:
            raise NotFound(f"no nai user named {name!r} (see `nai-admin user list`)")
        return doc

    def list_users(self) -> list[UserInfo]:
        with self.lock:
            return [self._user_info(d) for d in self.store.list_users()]

    def show_user(self, name: str) -> UserInfo:
        with self.lock:
            return self._user_info(self._user(name))

    def add_user(self, name: str) -> UserInfo:
        if unix.unix_account(name) is None:
            raise Invalid(
                f"there is no unix user {name!r} on this server: nai users are unix accounts "
                f"(create it first, e.g. `useradd -m {name}`)"
            )
        with self.lock:
            if self.store.get_user(name) is not None:
                raise Conflict(f"user {name!r} is already registered")
            doc = {"name": name, "created_at": self.clock(), "quota": Quota().model_dump()}
            self.store.add_user(doc)
            self._changed()
            return self._user_info(doc)

    def remove_user(self, name: str) -> None:
        with self.lock:
            self._user(name)
            self.store.remove_user(name)
            self._changed()

    def set_user_quota(self, name: str, quota: Quota) -> UserInfo:
        with self.lock:
            self._user(name)
            self.store.update_user(name, {"quota": quota.model_dump()})
            return self._user_info(self._user(name))

    # --- groups -----------------------------------------------------------------------

    def _group_doc(self, name: str) -> dict[str, Any]:
        return {"name": name, "members": [], "created_at": self.clock(),
                "quota": Quota().model_dump()}

    @staticmethod
    def _group_info(doc: dict[str, Any]) -> GroupInfo:
        return GroupInfo(name=doc["name"], members=sorted(doc["members"]),
                         quota=Quota(**doc.get("quota", {})), created_at=doc["created_at"])

    def _group(self, name: str) -> dict[str, Any]:
        doc = self.store.get_group(name)
        if doc is None:
            raise NotFound(f"no group named {name!r} (see `nai-admin group list`)")
        return doc

    def list_groups(self) -> list[GroupInfo]:
        with self.lock:
            return [self._group_info(d) for d in self.store.list_groups()]

    def show_group(self, name: str) -> GroupInfo:
        with self.lock:
            return self._group_info(self._group(name))

    def add_group(self, name: str) -> GroupInfo:
        with self.lock:
            if self.store.get_group(name) is not None:
                raise Conflict(f"group {name!r} already exists")
            doc = self._group_doc(name)
            self.store.add_group(doc)
            self._changed()
            return self._group_info(doc)

    def remove_group(self, name: str) -> None:
        if name == self.admins_group:
            raise Conflict(f"the {name!r} group holds the admins and cannot be removed")
        with self.lock:
            self._group(name)
            self.store.remove_group(name)
            self._changed()

    def add_member(self, group: str, user: str) -> GroupInfo:
        with self.lock:
            doc = self._group(group)
            if not (self.personal and user == self.owner) and user != "root":
                self._user(user)
            if user in doc["members"]:
                raise Conflict(f"{user!r} is already a member of {group!r}")
            self.store.update_group(group, {"members": [*doc["members"], user]})
            self._changed()
            return self._group_info(self._group(group))

    def remove_member(self, group: str, user: str) -> GroupInfo:
        with self.lock:
            doc = self._group(group)
            if user not in doc["members"]:
                raise NotFound(f"{user!r} is not a member of {group!r}")
            self.store.update_group(group, {"members": [m for m in doc["members"] if m != user]})
            self._changed()
            return self._group_info(self._group(group))

    def set_group_quota(self, name: str, quota: Quota) -> GroupInfo:
        with self.lock:
            self._group(name)
            self.store.update_group(name, {"quota": quota.model_dump()})
            return self._group_info(self._group(name))

    # --- drain ------------------------------------------------------------------------

    def drained(self) -> bool:
        with self.lock:
            return bool(self.store.get_setting("drained", False))

    def set_drained(self, drained: bool) -> bool:
        with self.lock:
            self.store.set_setting("drained", drained)
            return drained
