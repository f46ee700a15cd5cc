"""The registries' pure rules: access, references, removal plans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from nai_server.core import registry_rules as rules


@dataclass(frozen=True)
class Who:
    user: str
    admin: bool = False
    groups: tuple[str, ...] = ()


def entry(name: str = "d", *, kind: str = "dataset", owner: dict[str, str] | None = None,
          visibility: str = "private", groups: tuple[str, ...] = (),
          versions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"kind": kind, "name": name, "owner": owner or {"user": "ann"},
            "visibility": visibility, "shared_with_groups": list(groups),
            "versions": versions if versions is not None else [version(1)]}


def version(n: int, tag: str | None = None, *, deleted: bool = False,
            used_by: tuple[int, ...] = (), lineage: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    return {"version": n, "tag": tag, "deleted": deleted, "used_by": list(used_by),
            "metadata": {"lineage": lineage} if lineage else {}, "tree_id": f"t{n}"}


ANN, BOB, CAROL = Who("ann"), Who("bob", groups=("vision",)), Who("carol", groups=("nlp",))
ROOT = Who("root", admin=True)


@pytest.mark.parametrize(("doc", "readers", "writers"), [
    (entry(), {"ann", "root"}, {"ann", "root"}),
    (entry(owner={"group": "vision"}), {"bob", "root"}, {"bob", "root"}),
    (entry(visibility="shared"), {"ann", "bob", "carol", "root"}, {"ann", "root"}),
    (entry(groups=("nlp",)), {"ann", "carol", "root"}, {"ann", "root"}),
])
def test_access(doc: dict[str, Any], readers: set[str], writers: set[str]) -> None:
    people = (ANN, BOB, CAROL, ROOT)
    assert {p.user for p in people if rules.may_read(p, doc)} == readers
    assert {p.user for p in people if rules.may_write(p, doc)} == writers


def test_writers_in_words() -> None:
    assert rules.writers(entry()) == "ann and admins"
    assert rules.writers(entry(owner={"group": "g"})) == "members of group 'g' and admins"


def test_parse_ref_and_names() -> None:
    assert rules.parse_ref("cifar10") == ("cifar10", "latest")
    assert rules.parse_ref("cifar10@3") == ("cifar10", "3")
    assert rules.parse_ref("cifar10@best") == ("cifar10", "best")
    for bad in ("cifar@", "@3", "", "a/b", "-x", "x" * 65):
        with pytest.raises(rules.RefError):
            rules.parse_ref(bad)
    for bad in ("3", "latest", "-a", "a b"):
        with pytest.raises(rules.RefError):
            rules.check_tag(bad)


def test_find_version() -> None:
    doc = entry(versions=[version(1, "gold"), version(2), version(3, deleted=True)])
    find = rules.find_version
    assert find(doc, "latest")["version"] == 2  # type: ignore[index]
    assert find(doc, "gold")["version"] == 1  # type: ignore[index]
    assert find(doc, "3") is None and find(doc, "3", deleted=True) is not None
    assert find(doc, "9") is None and find(doc, "silver") is None
    assert rules.latest(entry(versions=[version(1, deleted=True)])) is None


def test_plan_removal_keeps_what_jobs_and_lineage_need() -> None:
    data = entry("cifar", versions=[version(1, used_by=(5, 6)), version(2), version(3)])
    model = entry("m", kind="model", versions=[version(1, lineage={"datasets": ["cifar@2"]})])
    plan = rules.plan_removal([data, model], "dataset", "cifar", {1, 2, 3}, active_jobs={6})
    assert plan.removed == (3,) and not plan.entry_removed
    assert plan.kept == {1: ["job 6 uses it and has not finished"],
                         2: ["model m@1 names it in its lineage"]}
    after = rules.apply_removal(data, plan)
    assert [(v["version"], v["deleted"]) for v in after["versions"]] == [(1, True), (2, True)]
    # Job 6 finishes and the model goes: both are collectable.
    assert rules.collectable([after, model], active_jobs=set()) == {("dataset", "cifar"): [1]}
    assert rules.collectable([after], active_jobs=set()) == {("dataset", "cifar"): [1, 2]}


def test_versions_removed_together_do_not_keep_each_other() -> None:
    chain = entry("m", kind="model", versions=[
        version(1), version(2, lineage={"models": ["m@1"]}),
        version(3, lineage={"models": ["m@2"]})])
    everything = rules.plan_removal([chain], "model", "m", {1, 2, 3}, active_jobs=())
    assert everything.removed == (1, 2, 3) and everything.entry_removed
    middle = rules.plan_removal([chain], "model", "m", {2}, active_jobs=())
    assert middle.removed == () and middle.kept == {2: ["model m@3 names it in its lineage"]}


def test_pinned_entries_are_the_entries_whose_removal_a_lineage_holds_back() -> None:
    model = entry("x", kind="model", versions=[
        version(1, lineage={"datasets": ["x@2", "cifar@1"], "job": 3}),
        version(2, lineage={"models": ["x@1", "unpinned"]}), version(3)])
    pinned = rules.pinned_entries(model)
    assert pinned == {("dataset", "x"), ("dataset", "cifar"), ("model", "x")}
    # What it pins is exactly what lineage_pins finds named, entry by entry.
    assert pinned == {(kind, name) for kind, name, _ in rules.lineage_pins([model])}
    assert rules.pinned_entries(entry()) == set()


def test_lineage_refs_shapes() -> None:
    assert rules.lineage_refs({"dataset": "a@1", "models": ["b", "c@2"], "job": 3}) == {
        "datasets": ["a@1"], "models": ["b", "c@2"]}
    with pytest.raises(rules.RefError):
        rules.lineage_refs({"datasets": [1]})


def test_a_tree_is_read_through_a_readable_version_not_its_lineage() -> None:
    code = {"job": 3, "code_tree": "c1"}
    doc = entry(visibility="shared", versions=[version(1, lineage=code),
                                               version(2, deleted=True)])
    assert rules.reads_tree(BOB, doc, "t1") and rules.reads_tree(BOB, doc, "t2")
    assert not rules.reads_tree(BOB, doc, "c1")  # named only in the lineage
    assert not rules.reads_tree(BOB, entry(), "t1")  # private: not through it
    assert rules.lineage_code_tree(doc["versions"][0]) == "c1"
    hidden = rules.hide_lineage_code(doc["versions"][0])
    assert hidden["metadata"]["lineage"] == {"job": 3, "code_tree": None}
    assert doc["versions"][0]["metadata"]["lineage"]["code_tree"] == "c1"  # a copy
    assert rules.lineage_code_tree(version(1)) is None
    assert rules.hide_lineage_code(version(1)) == version(1)
