"""A full disk costs no job its exit code and answers uploads with 507 "server disk
full"; below the free-space floor uploads are refused while jobs go on. On a real
small filesystem (a tmpfs) where the test may mount one."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app.use_cases import UseCases
from nai_server.cli.check import run_check
from nai_server.protocol import TERMINAL_STATES
from nai_server.store.atomic import CommitFailed
from nai_server.testing import AsPeer, make_service, pack, tick_until, wait_for

TERMINAL = TERMINAL_STATES


@pytest.fixture
def small_disk(tmpfs: Callable[[str], Path]) -> Path:
    """An 8 MiB filesystem of its own."""
    return tmpfs("8m")


def served(state: Path, **config: object) -> tuple[UseCases, TestClient]:
    service = make_service(state, **config)
    return service, TestClient(AsPeer(create_app(service)), base_url="http://nai")


def upload(api: TestClient, data: bytes) -> object:
    return api.post("/v1/blobs", content=pack({hashlib.sha256(data).hexdigest(): data}))


def test_an_upload_that_fills_the_disk_is_507(small_disk: Path) -> None:
    service, api = served(small_disk / "s", limits={"min_free_space": 0})
    try:
        response = upload(api, os.urandom(12 << 20))
        assert response.status_code == 507, response.text
        error = response.json()["error"]
        assert error["code"] == "disk_full" and "server disk full" in error["message"]
        assert upload(api, b"small").status_code == 201  # what fits is still stored
    finally:
        service.close()


def test_a_job_that_fills_the_disk_keeps_its_exit_code(small_disk: Path) -> None:
    service, api = served(small_disk / "s", limits={"min_free_space": 0})
    try:
        made = api.post("/v1/jobs", json={"spec": {
            "command": 'head -c 16m /dev/zero > "$NAI_OUTPUT_DIR/fill"; exit 0', "gpus": 0}})
        job = made.json()["id"]
        failed: list[CommitFailed] = []

        def tick() -> None:
            try:
                service.tick()
            except CommitFailed as exc:
                failed.append(exc)

        # The end cannot be written while the disk is full (unless its journal record
        # fits in the room the journal's last block has left)...
        wait_for(lambda: failed or api.get(f"/v1/jobs/{job}").json()["state"] in TERMINAL,
                 what="the job's end to hit the full disk", step=tick)
        if failed:
            assert api.get(f"/v1/jobs/{job}").json()["state"] == "running"
        # ...and is, with the job's own exit code, once there is room again.
        (service.runtime.job_dir(job) / "output" / "fill").unlink()
        tick_until(service, lambda: api.get(f"/v1/jobs/{job}").json()["state"] in TERMINAL,
                   what="the job's end to be written")
        done = api.get(f"/v1/jobs/{job}").json()
        assert (done["state"], done["exit_code"]) == ("succeeded", 0)
    finally:
        with contextlib.suppress(CommitFailed):
            service.close()


def test_below_the_floor_uploads_are_refused_and_jobs_go_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service, api = served(tmp_path / "s", limits={"min_free_space": "1000PiB"})
    try:
        refused = upload(api, b"data")
        assert refused.status_code == 507
        message = refused.json()["error"]["message"]
        assert message.startswith("server disk full") and "limits.min_free_space" in message
        job = api.post("/v1/jobs", json={"spec": {"command": "exit 0", "gpus": 0}}).json()["id"]
        tick_until(service, lambda: api.get(f"/v1/jobs/{job}").json()["state"] == "succeeded",
                   what="the job to run all the same")
        run_check(service.config)
        assert "warning: server disk full" in capsys.readouterr().out
        assert "server disk full" in api.get("/v1/gpus").json()["note"]
    finally:
        service.close()
