"""Submit rules at work: every enabled `nai.submit_rules` plugin sees a job before the
server's own checks, and may refuse it (403, naming the rule) or change its spec.

A rule that raises or times out is skipped for that submit (logged) unless required.
A rule whose earlier calls are stuck past their timeout is never skipped: the caller
whose own call is stuck (at once), and everyone once the rule has `MAX_STUCK` stuck
calls (after waiting up to its timeout for one to return), is told it is busy (503,
retry), so a spec crafted to hang a rule cannot let the submits after it pass
unchecked."""

from __future__ import annotations

import copy
import dataclasses
import logging
from types import MappingProxyType
from typing import Any, Protocol

from nai_server.core.spec import JobSpec, SpecError, spec_from_dict, spec_to_dict
from nai_server.plugins.bounded import BoundedCalls, PluginBusy
from nai_server.plugins.contracts import Kind, Refuse, Submission
from nai_server.plugins.registry import Hook, PluginRegistry
from nai_server.protocol import Forbidden, Unavailable

log = logging.getLogger("nai.plugins")

MAX_MESSAGE = 1000  # characters of a rule's refusal passed on to the user
MAX_STUCK = 4  # calls of one rule left running past their timeout before all wait


class Asker(Protocol):
    """Who submits (an `app.accounts.Caller`)."""

    user: str
    groups: Any
    admin: bool


class SubmitRules:
    """The chain of enabled submit rules, each call bounded by its plugin's timeout."""

    def __init__(self, registry: PluginRegistry, calls: BoundedCalls) -> None:
        self.registry = registry
        self.calls = calls
        self._seen = -1
        self._rules: tuple[list[Hook], dict[str, Any]] = ([], {})

    def _current(self) -> tuple[list[Hook], dict[str, Any]]:
        """The enabled rules and their frozen options, rebuilt when an admin enabled or
        disabled a plugin (swapped in one assignment: submits read it meanwhile)."""
        if self._seen != self.registry.generation:
            self._seen = self.registry.generation
            rules = self.registry.hooks(Kind.SUBMIT_RULE)
            self._rules = (rules, {r.name: _frozen(copy.deepcopy(r.config.options))
                                   for r in rules})
        return self._rules

    def screen(self, caller: Asker, spec: JobSpec) -> JobSpec:
        """The spec as the rules leave it; Forbidden when one refuses, Unavailable when a
        rule the admin marked required fails. Any other failure is logged and skipped."""
        rules, all_options = self._current()
        if not rules:
            return spec
        data = spec_to_dict(spec)
        submission = Submission(user=caller.user, groups=tuple(caller.groups),
                                admin=caller.admin, spec=_frozen(data))
        for rule in rules:
            options = all_options[rule.name]
            try:
                change = self.calls.call(rule.name, rule.config.timeout, _run, rule,
                                         submission, options, owner=caller.user,
                                         most=MAX_STUCK, wait=rule.config.timeout)
                if change is None:
                    continue
                changed = spec_from_dict({**data, **dict(change)},
                                         source=f"submit rule {rule.name}")
            except PluginBusy as exc:
                raise self._busy(rule, caller.user, exc) from None
            except Refuse as exc:
                raise Forbidden(f"submit rule {rule.name} refused this job: "
                                f"{str(exc.message)[:MAX_MESSAGE]}",
                                details={"rule": rule.name}) from None
            except SpecError as exc:
                self._failed(rule, f"its change to the spec is not valid: {exc}")
                continue
            except Exception as exc:
                self._failed(rule, f"{type(exc).__name__}: {exc}")
                continue
            spec, data = changed, spec_to_dict(changed)
            submission = dataclasses.replace(submission, spec=_frozen(data))
        return spec

    @staticmethod
    def _busy(rule: Hook, user: str, exc: PluginBusy) -> Unavailable:
        log.error("submit rule %s is busy, a submit of %s is refused: %s", rule.name, user,
                  exc)
        if exc.yours:
            why = ("it is still checking an earlier job of yours, past its "
                   f"{rule.config.timeout:g}s timeout; retry once that has finished")
        else:
            why = (f"{exc.stuck} earlier checks have not finished past its "
                   f"{rule.config.timeout:g}s timeout; retry in a moment, and tell the "
                   f"server's admin if it lasts")
        return Unavailable(f"submit rule {rule.name} is busy: {why}",
                           details={"rule": rule.name, "retry": True})

    @staticmethod
    def _failed(rule: Hook, why: str) -> None:
        log.error("submit rule %s failed: %s", rule.name, why)
        if rule.config.required:
            raise Unavailable(f"submit rule {rule.name} failed and the server requires it, so "
                              f"no job can be submitted now; tell the server's admin "
                              f"(the daemon's log says why)", details={"rule": rule.name})


def _frozen(value: Any) -> Any:
    """A read-only copy the rules share: mappings as MappingProxyType, lists as tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _run(rule: Hook, submission: Submission, options: Any) -> Any:
    return rule(submission=submission, options=options)
