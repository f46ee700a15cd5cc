"""A job's memory and CPU limits (`memory: 16G`, `cpus: 4`): refused beyond what the
server allows or has, set on its cgroup, reported when the OOM killer ends it, and never
silently unenforced. Real cgroups where this host has them; a cgroup tree in a
temporary directory for what the kernel here does not offer (pure cgroup v2)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app.use_cases import UseCases
from nai_server.host import cgroup_limits, contain
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import AsPeer, make_service, tick_until

TERMINAL = TERMINAL_STATES


def submit(api: TestClient, command: str, **spec: object) -> int:
    response = api.post("/v1/jobs", json={"spec": {"command": command, "gpus": 1, **spec}})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def info(api: TestClient, job_id: int) -> dict:
    return api.get(f"/v1/jobs/{job_id}").json()


def ended(api: TestClient, job_id: int):
    return lambda: info(api, job_id)["state"] in TERMINAL


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[UseCases, TestClient]]:
    """A server whose jobs get 64 MiB and 1 CPU unless they ask, and at most 1 GiB."""
    service = make_service(tmp_path / "state", jobs={
        "default_memory": "64MiB", "max_memory": "1GiB", "default_cpus": 1, "max_cpus": 2})
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as client:
        yield service, client
    service.close()


def test_limits_beyond_the_servers_maximum_or_its_size_are_refused(
        limited: tuple[UseCases, TestClient]) -> None:
    _, api = limited
    over = api.post("/v1/jobs", json={"spec": {"command": "true", "memory": "2GiB"}})
    assert over.status_code == 400
    assert over.json()["error"]["message"] == (
        "memory: 2.0 GiB asked, but jobs may have at most 1.0 GiB on this server "
        "(jobs.max_memory); ask for less")
    cpus = api.post("/v1/jobs", json={"spec": {"command": "true", "cpus": 3}})
    assert cpus.status_code == 400
    assert "cpus: 3 CPUs asked, but jobs may have at most 2 CPUs" in cpus.json()["error"]["message"]


def test_more_than_the_host_has_is_refused(api: TestClient) -> None:
    too_many = (os.cpu_count() or 1) + 1
    cpus = api.post("/v1/jobs", json={"spec": {"command": "true", "cpus": too_many}})
    assert cpus.status_code == 400
    assert cpus.json()["error"]["message"].startswith(
        f"cpus: {too_many} CPUs asked, but this server has {os.cpu_count()} CPU")
    memory = api.post("/v1/jobs", json={"spec": {"command": "true", "memory": "1PiB"}})
    assert memory.status_code == 400
    assert "but this server has" in memory.json()["error"]["message"]


def test_a_bad_unit_names_the_field_and_the_forms(api: TestClient) -> None:
    response = api.post("/v1/jobs", json={"spec": {"command": "true", "memory": "16 gigs"}})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "spec: memory: must be a size like 16G, 512MiB or 64GiB, got '16 gigs'")


def test_the_servers_defaults_are_the_limits_the_job_shows(
        limited: tuple[UseCases, TestClient]) -> None:
    _, api = limited
    job = submit(api, "true")
    assert info(api, job)["spec"]["memory"] == 64 << 20
    assert info(api, job)["spec"]["cpus"] == 1
    asked = submit(api, "true", memory="512MiB", cpus=0.5)
    assert (info(api, asked)["spec"]["memory"], info(api, asked)["spec"]["cpus"]) == (
        512 << 20, 0.5)


def _enforces(controller: str) -> bool:
    if os.geteuid() != 0:
        return False
    layout = contain.detect()
    return controller in cgroup_limits.survey(layout.kind, layout.root)


needs_memory = pytest.mark.skipif(not _enforces("memory"),
                                  reason="no memory controller for cgroups here")

# Keeps 1 MiB blocks until the kernel stops it (or 512 MiB, far past the limit).
HOG = "python3 -c 'k=[]\nfor _ in range(512): k.append(bytearray(1 << 20))\nprint(\"survived\")'"


@needs_memory
def test_a_job_over_its_memory_limit_ends_killed_out_of_memory(
        api: TestClient, service: UseCases) -> None:
    job = submit(api, HOG, memory="64MiB")
    tick_until(service, ended(api, job), timeout=60, what="the hog to end")
    done = info(api, job)
    assert done["state"] == "failed" and done["exit_code"] == 137
    assert done["message"] == "exit code 137; killed: out of memory (limit 64.0 MiB)"
    assert b"survived" not in api.get(f"/v1/jobs/{job}/logs").content


@needs_memory
def test_a_job_within_its_memory_limit_is_not_reported(
        api: TestClient, service: UseCases) -> None:
    job = submit(api, "python3 -c 'k = bytearray(8 << 20)'", memory="256MiB")
    tick_until(service, ended(api, job), timeout=60, what="the job to end")
    assert info(api, job)["state"] == "succeeded"
    assert info(api, job)["message"] is None


@pytest.mark.skipif(not _enforces("cpu"), reason="no cpu controller for cgroups here")
def test_a_jobs_cpu_limit_is_on_its_cgroup(
        api: TestClient, service: UseCases, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    job = submit(api, f"while [ ! -e {gate} ]; do sleep 0.02; done", cpus=0.5)
    try:
        tick_until(service, lambda: info(api, job)["state"] == "running", what="the job to run")
        limits = service.runtime.contain.limits
        cgroup = service.runtime.contain.path(job)
        assert cgroup is not None
        if "cpu" in limits.v2:
            assert (cgroup / "cpu.max").read_text().split() == ["50000", "100000"]
        else:
            quota = limits.v1["cpu"] / cgroup.name / "cpu.cfs_quota_us"
            assert quota.read_text().strip() == "50000"
    finally:  # a job left running would outlive the test
        gate.touch()
    tick_until(service, ended(api, job), what="the job to end")
    assert info(api, job)["state"] == "succeeded"


@pytest.fixture
def no_cgroups(service: UseCases) -> UseCases:
    """The service as on a host where no cgroup can be made."""
    service.runtime.contain.close(set())
    service.runtime.contain = contain.Containment(service.config.state,
                                                  contain.Layout("none", None))
    return service


def test_limits_a_host_cannot_enforce_are_said_so(
        api: TestClient, no_cgroups: UseCases, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    job = submit(api, f"while [ ! -e {gate} ]; do sleep 0.02; done", memory="1GiB", cpus=1)
    said = ("memory and cpu limits are not enforced on this server "
            "(no cgroup2 hierarchy mounted)")
    try:
        tick_until(no_cgroups, lambda: info(api, job)["state"] == "running",
                   what="the job to run")
        assert info(api, job)["message"] == said
    finally:  # a job left running would outlive the test
        gate.touch()
    tick_until(no_cgroups, ended(api, job), what="the job to end")
    assert info(api, job)["state"] == "succeeded"
    assert info(api, job)["message"] == said
    quiet = submit(api, "true")  # no limits asked: nothing to say
    tick_until(no_cgroups, ended(api, quiet), what="the job to end")
    assert info(api, quiet)["message"] is None


def _fake_v2(root: Path) -> contain.Layout:
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    return contain.Layout("v2", root)


def test_on_cgroup_v2_the_limits_are_memory_max_and_cpu_max(tmp_path: Path) -> None:
    """The kernel here has no memory controller in cgroup2: the files are checked in a
    directory laid out like one."""
    box = contain.Containment(tmp_path / "state", _fake_v2(tmp_path / "cg"))
    assert box.limits.v2 == {"memory", "cpu"} and box.limits.problem is None
    assert box.base is not None
    for step in (tmp_path / "cg", tmp_path / "cg" / "nai", box.base):
        assert set((step / "cgroup.subtree_control").read_text().split()) <= {"+memory", "+cpu"}
    path = box.create(7, memory=16 << 30, cpus=4)
    assert path is not None and box.joins(7) == ()
    assert (path / "memory.max").read_text() == str(16 << 30)
    assert (path / "memory.swap.max").read_text() == "0"  # no spilling past it to swap
    assert (path / "cpu.max").read_text() == "400000 100000"
    assert box.oom_note(7) is None
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    assert box.oom_note(7) == "killed: out of memory (limit 16.0 GiB)"
    note = contain.end_job(box, 7, None, -1, os.getuid(), None, (), set())
    assert note == "killed: out of memory (limit 16.0 GiB)"


def test_a_controller_that_cannot_be_enabled_is_reported(tmp_path: Path) -> None:
    layout = _fake_v2(tmp_path / "cg")
    (tmp_path / "cg" / "nai").mkdir()
    (tmp_path / "cg" / "nai" / "cgroup.subtree_control").mkdir()  # writes fail: EISDIR
    box = contain.Containment(tmp_path / "state", layout)
    assert box.limits.enforced == set()
    assert box.unenforced(1 << 30, None) == (
        "memory limit is not enforced on this server (cannot enable the memory controller "
        "for job cgroups: Is a directory; cannot enable the cpu controller for job cgroups: "
        "Is a directory)")
    assert box.unenforced(None, None) is None


def test_nai_show_shows_the_limits(capsys: pytest.CaptureFixture[str]) -> None:
    from nai_tui.cli import build_parser, commands
    from nai_tui.testing import FakeServerClient

    client = FakeServerClient()
    job = client.add_job(spec={"memory": 16 << 30, "cpus": 4.0})
    plain = client.add_job(spec={"time_limit": None})
    assert commands.cmd_show(build_parser().parse_args(["show", str(job.id)]), client) == 0
    assert "  limits:    time 1h, memory 16.0 GiB, 4 cpus\n" in capsys.readouterr().out
    assert commands.cmd_show(build_parser().parse_args(["show", str(plain.id)]), client) == 0
    assert "limits:" not in capsys.readouterr().out


def test_check_says_when_limits_are_not_enforced(
        service: UseCases, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from nai_server.cli import check

    monkeypatch.setattr(check.contain, "detect", lambda: contain.Layout("none", None))
    check.run_check(service.config)
    out = capsys.readouterr().out
    assert "limits: none" in out
    assert ("warning: memory and cpu limits of jobs (`memory:`/`cpus:` in nai.yaml) are not "
            "enforced here") in out
