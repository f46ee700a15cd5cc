"""Submit rules: a refusal reaches the user naming the rule, a change is validated, and
a rule that raises or hangs is skipped (logged with its name) unless required, but a
rule whose calls are stuck is never skipped for the submits after."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from nai_plugins.limits import default_time_limit, max_gpus_per_user, max_time_limit
from nai_server.config import PluginConfig
from nai_server.core.spec import JobSpec
from nai_server.plugins import PluginRegistry
from nai_server.plugins.bounded import BoundedCalls, PluginBusy, PluginTimeout
from nai_server.plugins.contracts import Kind, Refuse, hookimpl
from nai_server.plugins.submit_rules import MAX_STUCK, SubmitRules
from nai_server.protocol import Forbidden, Unavailable
from nai_server.testing import wait_for


@dataclass
class Asker:
    user: str = "ann"
    groups: tuple[str, ...] = ("vision",)
    admin: bool = False


class Rule:
    """A rule whose behaviour a test picks."""

    def __init__(self, act=None) -> None:
        self.act = act or (lambda submission, options: None)
        self.seen: list[dict] = []

    @hookimpl
    def nai_submit_rule(self, submission, options):
        self.seen.append(dict(submission.spec))
        return self.act(submission, options)


def raises(submission, options):
    raise KeyError("oops")


@pytest.fixture
def release() -> Iterator[threading.Event]:
    gate = threading.Event()
    yield gate
    gate.set()  # lets the hung rule's thread end


def rules(*named: tuple[str, object], **config: PluginConfig) -> SubmitRules:
    cfg = {name: config.get(name, PluginConfig(timeout=0.2)) for name, _ in named}
    registry = PluginRegistry.from_objects(cfg, [(n, Kind.SUBMIT_RULE, o) for n, o in named])
    return SubmitRules(registry, BoundedCalls())


def test_a_refusal_names_the_rule() -> None:
    def no(submission, options):
        raise Refuse("at most 2 GPUs; ask for fewer")

    with pytest.raises(Forbidden, match="submit rule limit refused this job: at most 2 GPUs"):
        rules(("limit", Rule(no))).screen(Asker(), JobSpec(command="true", gpus=4))


def test_changes_chain_in_name_order_and_are_validated(caplog) -> None:
    later = Rule()
    chain = rules(("a_cap", Rule(lambda s, o: {"time_limit": 60})),
                  ("b_bad", Rule(lambda s, o: {"gpus": -3})), ("c_look", later))
    spec = chain.screen(Asker(), JobSpec(command="true"))
    assert spec.time_limit == 60 and spec.gpus == 1
    assert later.seen[0]["time_limit"] == 60
    assert "submit rule b_bad failed" in caplog.text


def test_a_raising_rule_is_logged_and_skipped(caplog) -> None:
    after = Rule(lambda s, o: {"name": "renamed"})
    with caplog.at_level(logging.ERROR, "nai.plugins"):
        spec = rules(("boom", Rule(raises)), ("then", after)).screen(
            Asker(), JobSpec(command="true"))
    assert spec.name == "renamed"
    assert "submit rule boom failed: KeyError" in caplog.text


def test_a_hanging_rule_times_out_and_the_submit_goes_on(caplog, release) -> None:
    hang = Rule(lambda s, o: release.wait() if s.user == "ann" else None)
    chain = rules(("hang", hang), ("then", Rule(lambda s, o: {"name": "ok"})))
    with caplog.at_level(logging.ERROR, "nai.plugins"):
        assert chain.screen(Asker(), JobSpec(command="true")).name == "ok"
    assert "submit rule hang failed: PluginTimeout" in caplog.text
    # Ann's check is still stuck: her next submit is not let through unchecked.
    with pytest.raises(Unavailable, match="submit rule hang is busy: it is still checking "
                                          "an earlier job of yours"):
        chain.screen(Asker(), JobSpec(command="true"))
    # Others are still checked, on a thread of their own.
    assert chain.screen(Asker(user="bob"), JobSpec(command="true")).name == "ok"
    assert len(hang.seen) == 2
    release.set()
    wait_for(lambda: chain.calls.stuck("hang") == 0, what="the hung call to return")
    assert chain.screen(Asker(), JobSpec(command="true")).name == "ok"
    assert len(hang.seen) == 3


def test_a_rule_with_too_many_stuck_calls_is_busy_for_everyone(release) -> None:
    chain = rules(("hang", Rule(lambda s, o: release.wait())))
    for n in range(MAX_STUCK):
        chain.screen(Asker(user=f"u{n}"), JobSpec(command="true"))
    with pytest.raises(Unavailable, match=f"{MAX_STUCK} earlier checks have not finished"):
        chain.screen(Asker(user="late"), JobSpec(command="true"))
    release.set()
    wait_for(lambda: chain.calls.stuck("hang") == 0, what="the hung calls to return")


def test_notifier_calls_are_skipped_while_one_is_stuck(release) -> None:
    calls = BoundedCalls()
    with pytest.raises(PluginTimeout):
        calls.call("n", 0.1, release.wait)
    with pytest.raises(PluginBusy):
        calls.call("n", 0.1, lambda: None)
    release.set()
    wait_for(lambda: calls.stuck("n") == 0, what="the hung call to return")
    assert calls.call("n", 5, lambda: 7) == 7


def test_a_required_rule_that_fails_blocks_submits(release) -> None:
    chain = rules(("must", Rule(raises)), must=PluginConfig(required=True))
    with pytest.raises(Unavailable, match="submit rule must failed"):
        chain.screen(Asker(), JobSpec(command="true"))
    hung = rules(("must", Rule(lambda s, o: release.wait())),
                 must=PluginConfig(required=True, timeout=0.2))
    with pytest.raises(Unavailable, match="submit rule must failed"):
        hung.screen(Asker(), JobSpec(command="true"))


def test_first_party_limits() -> None:
    chain = rules(("default_time_limit", default_time_limit),
                  ("max_gpus_per_user", max_gpus_per_user),
                  default_time_limit=PluginConfig(options={"time_limit": "4h",
                                                           "groups": {"vision": "12h"}}),
                  max_gpus_per_user=PluginConfig(options={"max_gpus": 2,
                                                          "groups": {"vision": 4}}))
    assert chain.screen(Asker(), JobSpec(command="true")).time_limit == 4 * 3600
    assert chain.screen(Asker(), JobSpec(command="true", time_limit=60)).time_limit == 60
    assert chain.screen(Asker(), JobSpec(command="t", group="vision")).time_limit == 12 * 3600
    with pytest.raises(Forbidden, match=r"max_gpus_per_user .*at most 2 GPU"):
        chain.screen(Asker(), JobSpec(command="true", gpus=3))
    assert chain.screen(Asker(), JobSpec(command="true", gpus=3, group="vision")).gpus == 3
    assert chain.screen(Asker(admin=True), JobSpec(command="true", gpus=8)).gpus == 8


def test_max_time_limit_runs_after_the_default() -> None:
    chain = rules(("default_time_limit", default_time_limit),
                  ("max_time_limit", max_time_limit),
                  default_time_limit=PluginConfig(options={"time_limit": "4h"}),
                  max_time_limit=PluginConfig(options={"time_limit": "24h",
                                                       "groups": {"vision": "72h"}}))
    assert chain.screen(Asker(), JobSpec(command="true")).time_limit == 4 * 3600
    with pytest.raises(Forbidden, match=r"the longest time limit on this server is 1d"):
        chain.screen(Asker(), JobSpec(command="true", time_limit=48 * 3600))
    spec = JobSpec(command="true", time_limit=48 * 3600, group="vision")
    assert chain.screen(Asker(), spec).time_limit == 48 * 3600
    assert chain.screen(Asker(admin=True), JobSpec(command="t", time_limit=10**6)).time_limit
    alone = rules(("max_time_limit", max_time_limit),
                  max_time_limit=PluginConfig(options={"time_limit": 3600}))
    with pytest.raises(Forbidden, match="jobs need a time limit of at most 1h"):
        alone.screen(Asker(), JobSpec(command="true"))
