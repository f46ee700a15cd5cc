"""The `labels` annotator's app and an annotate session's runner, called as its replica
calls them: labels are appended as they are made, with who made them; only the
dataset's own files are served; `/_nai/finish` is the daemon's, not the runner's; the
daemon lists an annotator without importing it; what makes a service document a
session, and its labels' lineage."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from nai_plugins import labels
from nai_server.api.relay import invoke_admit
from nai_server.config import PluginConfig
from nai_server.core.processing import annotator_env, is_session, session_lineage, unsaved
from nai_server.core.service_rules import expired
from nai_server.plugins import PluginRegistry
from nai_server.plugins.annotator_replica import Runner
from nai_server.plugins.contracts import Kind
from nai_server.protocol import NotFound


def dataset(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    (root / "a.txt").write_text("a cat sat")
    (root / "img" / "b.png").write_bytes(b"\x89PNG fake")
    (root / "labels.jsonl").write_text(json.dumps({"item": "a.txt", "label": "cat"}) + "\n")
    return root


def test_labels_are_saved_as_made_with_who_made_them(tmp_path: Path) -> None:
    source, target = dataset(tmp_path / "src"), tmp_path / "out"
    target.mkdir()
    app = labels.nai_annotator_app(source=source, target=target,
                                   options={"classes": "cat,dog"})
    with TestClient(app) as http:
        assert "nai labels" in http.get("/").text
        state = http.get("/items").json()
        assert state["items"] == ["a.txt", "img/b.png"]
        assert state["labels"] == {"a.txt": "cat"}  # carried over from the input
        assert state["labelled"] == 1
        made = http.post("/label", json={"item": "img/b.png", "label": "dog"},
                         headers={"x-nai-user": "alice"})
        assert made.status_code == 200 and made.json()["labelled"] == 2
        assert http.post("/label", json={"item": "a.txt", "label": "cow"}).status_code == 400
        assert http.post("/label", json={"item": "x", "label": "cat"}).status_code == 400
        assert http.get("/file/img/b.png").content == b"\x89PNG fake"
        assert http.get("/file/../out/labels.jsonl").status_code == 404
        assert http.get("/file/%2e%2e/src/a.txt").status_code == 404
    rows = [json.loads(line) for line in (target / "labels.jsonl").read_text().splitlines()]
    assert rows[-1]["item"] == "img/b.png" and rows[-1]["by"] == "alice"
    assert (target / "a.txt").read_text() == "a cat sat"  # keep=files: a whole version
    # A replica that runs again goes on from what it saved.
    again = labels.make_app(source, target, {"classes": "cat,dog"})
    with TestClient(again) as http:
        assert http.get("/items").json()["labels"] == {"a.txt": "cat", "img/b.png": "dog"}


def test_keep_labels_and_bad_options(tmp_path: Path) -> None:
    source, target = dataset(tmp_path / "src"), tmp_path / "out"
    target.mkdir()
    labels.make_app(source, target, {"classes": "cat", "keep": "labels"})
    assert sorted(p.name for p in target.iterdir()) == ["labels.jsonl"]
    for bad in ({}, {"classes": "a,a"}, {"classes": "a", "keep": "some"}):
        with pytest.raises(ValueError):
            labels.make_app(source, target, bad)


def test_the_runner_answers_its_health_and_leaves_finish_to_the_daemon(
        tmp_path: Path) -> None:
    source, target = dataset(tmp_path / "src"), tmp_path / "out"
    target.mkdir()
    runner = Runner(labels.make_app(source, target, {"classes": "cat"}))
    with TestClient(runner) as http:
        assert http.get("/_nai/health").json() == {"ok": True}
        assert http.post("/_nai/finish").status_code == 404  # the daemon's, never here
        assert http.get("/items").status_code == 200


def test_annotators_are_listed_not_imported_and_lineage_names_them() -> None:
    def boom() -> None:
        raise AssertionError("the daemon imported an annotator")

    registry = PluginRegistry({"labels": PluginConfig()})
    registry.add("labels", Kind.ANNOTATOR, boom, "1.0")
    registry.add("other", Kind.ANNOTATOR, boom, None)
    states = {s.name: s.state for s in registry.statuses()}
    assert states == {"labels": "ok", "other": "disabled"}
    assert registry.as_job(Kind.ANNOTATOR, "labels") == (PluginConfig(), "1.0")
    assert registry.as_job(Kind.DATASET_PROCESSOR, "labels") is None
    env = annotator_env("labels", "1.0", {"classes": "a,b"}, "/out")
    assert env["ANNOTATOR"] == "labels" and env["NAI_OUTPUT_DIR"] == "/out"
    assert json.loads(env["ANNOTATOR_OPTIONS"]) == {"classes": "a,b"}


def session(**fields: Any) -> dict[str, Any]:
    return {"name": "s", "model": "photos@1", "state": "stopped", "user": "alice",
            "replica_docs": [], "updated_at": 0.0, "number": 1, "kind": "annotator",
            "annotation": {"plugin": "labels", "version": "1.0", "options": {"c": "a"},
                           "to": "photos", "labelled_by": ["bob", "alice", "bob"],
                           "done": False}, **fields}


def test_only_the_annotate_requests_documents_are_sessions_and_wait_to_be_saved() -> None:
    doc = session()
    assert is_session(doc) and unsaved(doc)
    assert session_lineage(doc) == {
        "datasets": ["photos@1"], "service": "s", "labelled_by": ["alice", "bob"],
        "annotator": {"plugin": "labels", "version": "1.0", "options": {"c": "a"}}}
    # A stopped session is not removed before its labels are saved; then it may be.
    assert expired([doc], 1e9, keep=0, max_age=1) == []
    doc["annotation"]["done"] = True
    assert expired([doc], 1e9, keep=0, max_age=1) == ["s"]
    # A model's service, or one that only looks like a session, is none.
    assert not is_session({**doc, "kind": "model"})
    assert not is_session({k: v for k, v in doc.items() if k != "annotation"})


def test_the_gateway_never_reaches_a_session() -> None:
    class Services:
        def admit_now(self, caller: object, name: str) -> float:
            return 1.0

        def admitted(self, name: str) -> dict[str, Any]:
            return session(state="ready")

    admit = invoke_admit(Services(), None, "s")  # type: ignore[arg-type]  # the gateway's
    with pytest.raises(NotFound, match="nai service forward s"):
        asyncio.run(admit())


def test_listings_show_a_session_as_an_annotator_over_its_dataset() -> None:
    from nai_server.app.service_stats import RequestBook, service_info
    from nai_tui.cli.services import describe, service_rows
    from nai_tui.tui.screens.services import service_row

    doc = {**session(state="ready"), "owner": {"user": "alice"}, "visibility": "group",
           "public": False, "replicas": 1, "gpus": 0, "idle_timeout": None,
           "max_batch": None, "max_wait_ms": None, "created_at": 0.0}
    info = service_info(doc, RequestBook(), 0.0, True)
    assert (info.kind, info.plugin, info.labels_to) == ("annotator", "labels 1.0", "photos")
    assert "photos@1 (annotator labels 1.0)" in service_rows([info])
    assert service_row(info)[1] == "photos@1 (annotator labels 1.0)"
    assert "labels go to dataset photos when it stops" in describe(info)
    done = service_info({**doc, "annotation": {**doc["annotation"], "saved": "photos@2"}},
                        RequestBook(), 0.0, True)
    assert "labels saved as photos@2" in describe(done)
