"""`nai-admin store verify`: follows a running verification to its end, prints what it
found, and exits 1 when the store is damaged."""

from __future__ import annotations

from typing import Any

import pytest

from nai_server.cli import admin
from nai_server.protocol import Conflict


def report(state: str, **fields: Any) -> dict[str, Any]:
    base = {"state": state, "repair": False, "started_at": 1.0, "finished_at": None,
            "error": None, "blobs_checked": 3, "bytes_checked": 30, "trees_checked": 1,
            "blobs": [], "trees": [], "jobs": [], "versions": [], "stray": [],
            "unlisted": {}, "clean": False}
    return {**base, **fields}


class FakeClient:
    def __init__(self, answers: list[dict[str, Any]], running: bool = False) -> None:
        self.answers, self.running, self.calls = answers, running, []

    def call(self, method: str, path: str, body: Any = None) -> Any:
        self.calls.append((method, path, body))
        if method == "POST" and self.running:
            raise Conflict("a store verification is running already")
        return self.answers.pop(0)


def run(argv: list[str], client: FakeClient) -> int:
    args = admin.build_parser().parse_args(["store", "verify", *argv])
    return admin.store_verify(args, client, sleep=lambda _: None)  # type: ignore[arg-type]


DAMAGED = report("done", repair=True, blobs=[
    {"digest": "a" * 64, "problem": "corrupt", "moved_to": "corrupt/x", "owners": ["ann"]}],
    trees=[{"id": "t" * 64, "problem": "incomplete", "files": ["w.bin"], "damaged_files": 1,
            "moved_to": None}],
    jobs=[{"id": 4, "user": "ann", "state": "queued",
           "trees": [{"role": "code", "tree_id": "t" * 64, "problem": "incomplete"}]}])


def test_it_waits_for_the_end_and_exits_1_on_damage(capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient([report("running"), report("running"), DAMAGED])
    assert run(["--repair"], client) == 1
    assert client.calls[0] == ("POST", "/store/verify", {"repair": True})
    out = capsys.readouterr().out
    assert "corrupt blob " + "a" * 64 + ", moved aside to corrupt/x; uploaded by ann" in out
    assert "incomplete tree " + "t" * 64 + ": w.bin" in out
    assert "job 4 of ann (queued): code (incomplete)" in out


def test_a_running_one_is_followed_and_a_clean_store_exits_0(
        capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient([report("running"), report("done", clean=True)], running=True)
    assert run(["--json"], client) == 0
    assert "running already; following it" in capsys.readouterr().err
    assert [c[0] for c in client.calls] == ["POST", "GET", "GET"]


# --- nai-admin store gc ------------------------------------------------------------------


def gc_report(state: str, **fields: Any) -> dict[str, Any]:
    base = {"state": state, "dry_run": False, "grace_seconds": 86400.0, "started_at": 1.0,
            "finished_at": None, "error": None, "phase": "blobs", "cutoff": 0.0,
            "referenced_trees": 2, "trees_deleted": 1, "trees_kept": 2,
            "young_trees_kept": 0, "blobs_deleted": 3, "bytes_deleted": 3 << 20,
            "bytes_freed": 2 << 20, "blobs_kept": 5, "bytes_kept": 5 << 20,
            "young_blobs_kept": 1, "claims_deleted": 4, "stray": [], "unlisted_stray": 0}
    return {**base, **fields}


class GcClient(FakeClient):
    def call(self, method: str, path: str, body: Any = None) -> Any:
        self.calls.append((method, path, body))
        if method == "POST" and self.running:
            raise Conflict("a store gc is running already; follow it")
        return self.answers.pop(0)


def run_gc(argv: list[str], client: FakeClient) -> int:
    args = admin.build_parser().parse_args(["store", "gc", *argv])
    return admin.store_gc(args, client, sleep=lambda _: None)  # type: ignore[arg-type]


def test_gc_waits_for_the_end_and_says_what_it_freed(
        capsys: pytest.CaptureFixture[str]) -> None:
    client = GcClient([gc_report("running"), gc_report("running"), gc_report("done")])
    assert run_gc(["--grace", "1h30m", "--dry-run"], client) == 0
    assert client.calls[0] == ("POST", "/store/gc", {"grace_seconds": 5400, "dry_run": True})
    assert [c[:2] for c in client.calls[1:]] == [("GET", "/store/gc")] * 2
    out = capsys.readouterr().out
    assert "deleted 3 (3.0 MiB), kept 5 (5.0 MiB" in out
    assert "freed: 2.0 MiB (+1.0 MiB once the job folders and views linking them go)" in out


def test_gc_follows_one_running_and_exits_1_when_it_failed(
        capsys: pytest.CaptureFixture[str]) -> None:
    client = GcClient([gc_report("failed", error="tree t cannot be read")], running=True)
    assert run_gc([], client) == 1
    assert client.calls[0][2] == {"grace_seconds": 86400, "dry_run": False}
    captured = capsys.readouterr()
    assert "following it" in captured.err and "tree t cannot be read" in captured.out


def test_gc_refuses_a_grace_that_is_no_duration() -> None:
    with pytest.raises(admin.Invalid, match="--grace: not a duration"):
        run_gc(["--grace", "soon"], GcClient([]))


def test_verify_does_not_follow_a_gc_it_was_refused_for() -> None:
    class GcRunning(FakeClient):
        def call(self, method: str, path: str, body: Any = None) -> Any:
            raise Conflict("a store gc is running; wait for it to end")

    with pytest.raises(Conflict, match="gc is running"):
        run([], GcRunning([]))
