"""Per-user notification choices (`nai notify add webhook URL --on failed`): a user
subscribes to events of their own jobs, delivered by an enabled notifier plugin that
implements `nai_notify_user`, at the address they gave. They are kept in the store,
and the notifiers' worker reads an in-memory copy, looked up by the job's owner, so a
user is only ever told of their own jobs."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from nai_server.plugins.bounded import BoundedCalls
from nai_server.plugins.contracts import EVENTS, Kind, Refuse
from nai_server.plugins.registry import Hook, PluginRegistry
from nai_server.protocol import Invalid, NotFound, Unavailable

KEY = "notify_subscriptions"  # the store setting: {"next": id, "subs": [...]}
MAX_PER_USER = 8
MAX_TARGET = 2048
DELIVER, CHECK = "nai_notify_user", "nai_notify_check"


@dataclass(frozen=True)
class Subscription:
    id: int
    user: str
    via: str  # the notifier plugin
    target: str  # where it sends: a URL, an address
    events: tuple[str, ...]


class Subscriptions:
    """Every user's subscriptions: changed through the store, read from memory."""

    def __init__(self, registry: PluginRegistry, calls: BoundedCalls, store: Any,
                 lock: Any) -> None:
        self.registry, self.calls, self.store, self.lock = registry, calls, store, lock
        self._guard = threading.Lock()
        with lock:
            saved = store.get_setting(KEY) or {}
        self._next = int(saved.get("next", 1))
        self._by_user: dict[str, tuple[Subscription, ...]] = {}
        for raw in saved.get("subs", []):
            sub = Subscription(**{**raw, "events": tuple(raw["events"])})
            self._by_user[sub.user] = (*self._by_user.get(sub.user, ()), sub)

    def any(self) -> bool:
        return bool(self._by_user)

    def of(self, user: str) -> tuple[Subscription, ...]:
        """`user`'s subscriptions (an immutable snapshot)."""
        return self._by_user.get(user, ())

    def deliverer(self, via: str) -> Hook | None:
        """The enabled notifier `via`'s per-user delivery, if it has one."""
        return next((h for h in self.registry.hooks(Kind.NOTIFIER, DELIVER) if h.name == via),
                    None)

    def add(self, user: str, via: str, target: str, events: list[str]) -> Subscription:
        """Subscribe `user` to `events` of their jobs, sent by notifier `via` to `target`."""
        hook = self.deliverer(via)
        if hook is None:
            offered = sorted(h.name for h in self.registry.hooks(Kind.NOTIFIER, DELIVER))
            raise NotFound(f"no notifier named {via!r} delivers to users on this server "
                           f"(offered: {', '.join(offered) or 'none'})")
        unknown = sorted(set(events) - set(EVENTS))
        if not events or unknown:
            raise Invalid(f"events: some of {', '.join(EVENTS)}"
                          + (f"; not {', '.join(unknown)}" if unknown else ""))
        if not target or len(target) > MAX_TARGET or not target.isprintable():
            raise Invalid(f"the address must be printable text of at most {MAX_TARGET} "
                          f"characters")
        self._check(hook, target)
        with self.lock, self._guard:
            mine = self._by_user.get(user, ())
            if len(mine) >= MAX_PER_USER:
                raise Invalid(f"you have {len(mine)} subscriptions, the most there may be; "
                              f"remove one first (`nai notify rm ID`)")
            sub = Subscription(id=self._next, user=user, via=via, target=target,
                               events=tuple(e for e in EVENTS if e in events))
            self._save({**self._by_user, user: (*mine, sub)}, self._next + 1)
        return sub

    def remove(self, user: str, sub_id: int) -> Subscription:
        with self.lock, self._guard:
            mine = self._by_user.get(user, ())
            gone = next((s for s in mine if s.id == sub_id), None)
            if gone is None:  # another user's answers as absent
                raise NotFound(f"you have no subscription {sub_id} (`nai notify list`)")
            rest = tuple(s for s in mine if s.id != sub_id)
            by_user = {**self._by_user, user: rest}
            if not rest:
                del by_user[user]
            self._save(by_user, self._next)
        return gone

    def _check(self, hook: Hook, target: str) -> None:
        """The notifier's own vetting of the address, bounded like its deliveries."""
        check = next((h for h in self.registry.hooks(Kind.NOTIFIER, CHECK)
                      if h.name == hook.name), None)
        if check is None:
            return
        try:
            self.calls.call(f"{hook.name}:check", hook.config.timeout, _check, check, target)
        except Refuse as exc:
            raise Invalid(f"{hook.name} cannot send to that address: {exc.message}") from None
        except Exception as exc:
            raise Unavailable(f"{hook.name} could not check that address "
                              f"({type(exc).__name__}); retry later") from None

    def _save(self, by_user: dict[str, tuple[Subscription, ...]], next_id: int) -> None:
        """Under the store lock: commit, then swap the copy the worker reads."""
        subs = [asdict(s) for mine in by_user.values() for s in mine]
        self.store.set_setting(KEY, {"next": next_id, "subs": subs})
        self._by_user, self._next = by_user, next_id


def _check(hook: Hook, target: str) -> Any:
    return hook(target=target, options=dict(hook.config.options))
