"""The `labels` annotator's app and the annotate job's runner, called as the job calls
them: labels are appended as they are made, with who made them; only the dataset's own
files are served; the runner's `/_nai/finish` ends the session; the daemon lists an
annotator without importing it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_plugins import labels
from nai_server.config import PluginConfig
from nai_server.core.processing import annotator_env, annotator_lineage
from nai_server.plugins import PluginRegistry
from nai_server.plugins.annotate_job import Runner, margin
from nai_server.plugins.contracts import Kind


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
    # A job that runs again goes on from what it saved.
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


def test_the_runner_finishes_on_its_own_path_only(tmp_path: Path) -> None:
    source, target = dataset(tmp_path / "src"), tmp_path / "out"
    target.mkdir()
    runner = Runner(labels.make_app(source, target, {"classes": "cat"}))
    with TestClient(runner) as http:
        assert http.get("/_nai/finish").status_code == 404  # only POST ends it
        assert not runner.finish.is_set()
        assert http.get("/items").status_code == 200
        assert http.post("/_nai/finish").json() == {"finishing": True}
    assert runner.finish.is_set()
    assert margin(10) >= 5 and margin(100_000) == 60

def test_a_jobs_session_age_counts_from_its_leaders_start() -> None:
    import subprocess
    import sys

    # in a session of its own, as a job's wrapper leads one (the test process's session
    # leader may lie outside this pid namespace, where /proc cannot say)
    age = subprocess.run(
        [sys.executable, "-c", "import time; time.sleep(0.2); from nai_server.plugins."
         "annotate_job import session_age; print(session_age())"],
        start_new_session=True, capture_output=True, text=True, check=True).stdout
    assert 0.1 < float(age) < 60


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
    env = annotator_env("labels", "1.0", {"classes": "a,b"}, 600)
    assert annotator_lineage(env) == {"plugin": "labels", "version": "1.0",
                                      "options": {"classes": "a,b"}}
    assert annotator_lineage({}) is None
