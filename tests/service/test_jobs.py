"""Jobs through the in-process API and a service stepped with tick(): real job
processes on fake GPUs."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from pathlib import Path

from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app.use_cases import UseCases
from nai_server.testing import AsPeer, make_service, tick_until, wait_for


def submit(api: TestClient, command: str, **spec) -> dict:
    response = api.post("/v1/jobs", json={"spec": {"command": command, **spec}})
    assert response.status_code == 201, response.text
    return response.json()


def state(api: TestClient, job_id: int) -> str:
    return api.get(f"/v1/jobs/{job_id}").json()["state"]


def ended(api: TestClient, *ids: int):
    return lambda: all(state(api, i) in {"succeeded", "failed", "cancelled", "timed_out",
                                         "lost"} for i in ids)


def test_three_jobs_on_two_gpus(api: TestClient, service: UseCases, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    cmd = (f'echo "$CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER" > "$NAI_OUTPUT_DIR/cvd"; '
           f'while [ ! -e {gate} ]; do sleep 0.02; done')
    jobs = [submit(api, cmd, gpus=1, name=f"j{i}")["id"] for i in range(3)]
    service.tick()
    states = [state(api, j) for j in jobs]
    assert states == ["running", "running", "queued"]
    infos = [api.get(f"/v1/jobs/{j}").json() for j in jobs]
    assert sorted(infos[0]["gpus"] + infos[1]["gpus"]) == [0, 1]
    assert infos[2]["reason"] == "Resources"
    gpus = api.get("/v1/gpus").json()
    assert gpus["source"] == "fake" and {g["job"] for g in gpus["gpus"]} == set(jobs[:2])

    gate.touch()
    tick_until(service, ended(api, *jobs), what="all three jobs to end")
    seen = set()
    for j in jobs:
        info = api.get(f"/v1/jobs/{j}").json()
        assert info["state"] == "succeeded" and info["exit_code"] == 0
        cvd = api.get(f"/v1/jobs/{j}/outputs/file", params={"path": "cvd"}).text.split()
        assert cvd[1] == "PCI_BUS_ID"
        seen.add(cvd[0])
    assert seen == {"0", "1"}


def test_yaml_spec_errors_name_the_line_and_overrides_apply(api: TestClient) -> None:
    text = "name: demo\ncommand: echo hi\ngpus: 1\ntime_limt: 2h\n"
    bad = api.post("/v1/jobs", json={"spec_yaml": text})
    assert bad.status_code == 400
    err = bad.json()["error"]
    assert err["message"].startswith("nai.yaml:4:") and "time_limit" in err["message"]
    assert err["details"] == {"field": "time_limt", "line": 4}
    good = api.post("/v1/jobs", json={"spec_yaml": text.replace("time_limt", "time_limit"),
                                      "overrides": {"gpus": "0", "env": ["SEED=3"]}})
    assert good.status_code == 201, good.text
    assert good.json()["spec"]["gpus"] == 0 and good.json()["spec"]["env"] == {"SEED": "3"}
    wrong = api.post("/v1/jobs", json={"spec_yaml": "command: x\n",
                                       "overrides": {"gpus": "lots"}})
    assert wrong.status_code == 400 and "command line" in wrong.json()["error"]["message"]


def test_spec_errors_name_the_field(api: TestClient) -> None:
    bad = api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": "two"}})
    assert bad.status_code == 400 and "gpus" in bad.json()["error"]["message"]
    unknown = api.post("/v1/jobs", json={"spec": {"command": "true", "gpu": 1}})
    assert unknown.status_code == 400 and "gpus" in unknown.json()["error"]["message"]
    too_many = api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 3}})
    assert too_many.status_code == 400
    assert "has 2 GPU(s); ask for at most 2" in too_many.json()["error"]["message"]
    too_big = api.post("/v1/jobs", json={"spec": {"command": "true", "gpu_memory": "100GiB"}})
    assert too_big.status_code == 400 and too_big.json()["error"]["message"] == (
        "gpu_memory: 100.0 GiB asked, but the largest GPU here has 80.0 GiB; ask for at "
        "most that")
    no_tree = api.post("/v1/jobs", json={"spec": {"command": "true"}, "code_tree": "a" * 64})
    assert no_tree.status_code == 400 and "upload it first" in no_tree.json()["error"]["message"]


def test_cancel_queued_and_running(api: TestClient, service: UseCases, tmp_path: Path) -> None:
    marker, ready = tmp_path / "term", tmp_path / "ready"
    running = submit(api, f"trap 'touch {marker}; exit 3' TERM; touch {ready}; "
                          f"while :; do sleep 0.02; done", gpus=2)["id"]
    queued = submit(api, "true", gpus=1)["id"]
    service.tick()
    assert state(api, running) == "running" and state(api, queued) == "queued"
    wait_for(ready.exists, what="the job to set its SIGTERM trap")
    assert api.delete(f"/v1/jobs/{queued}").json()["state"] == "cancelled"
    response = api.post(f"/v1/jobs/{running}", headers={"X-HTTP-Method-Override": "DELETE"})
    assert response.status_code == 200
    tick_until(service, ended(api, running), what="the cancelled job to end")
    info = api.get(f"/v1/jobs/{running}").json()
    assert info["state"] == "cancelled" and marker.exists()  # it saw SIGTERM first
    again = api.delete(f"/v1/jobs/{running}")
    assert again.status_code == 409 and "already ended" in again.json()["error"]["message"]


def test_sigkill_after_grace_when_sigterm_is_ignored(tmp_path: Path) -> None:
    now = [1000.0]
    service = make_service(tmp_path / "s", jobs={"cancel_grace_seconds": 5},
                           clock=lambda: now[0])
    api = TestClient(AsPeer(create_app(service)), base_url="http://nai")
    ready = tmp_path / "ready"
    job = submit(api, f"trap '' TERM; touch {ready}; while :; do sleep 0.02; done",
                 gpus=1)["id"]
    service.tick()
    pid = service.store.get_job(job)["pid"]
    # Cancel only once the job ignores SIGTERM: a signal sent before its trap is set
    # would end it at once, and this test is about the grace period.
    wait_for(ready.exists, what="the job to set its trap")
    api.delete(f"/v1/jobs/{job}")
    service.tick()
    assert state(api, job) == "running"  # still in its grace period
    now[0] += 6
    tick_until(service, ended(api, job), what="SIGKILL to end the job")
    assert state(api, job) == "cancelled"
    tick_until(service, lambda: not group_alive(pid), what="the job's process group to go")
    service.close()


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in the process group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_bytes()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def test_time_limit(tmp_path: Path) -> None:
    now = [1000.0]
    service = make_service(tmp_path / "s", clock=lambda: now[0])
    api = TestClient(AsPeer(create_app(service)), base_url="http://nai")
    ready = tmp_path / "ready"
    job = submit(api, f"touch {ready}; sleep 30", gpus=1, time_limit="1m")["id"]
    service.tick()
    # The fake clock makes the limit fire a moment after the start; wait until the job's
    # own shell runs, so SIGTERM does not land between the wrapper's fork and exec.
    wait_for(ready.exists, what="the job to start")
    now[0] += 30
    service.tick()
    assert state(api, job) == "running"
    now[0] += 31
    tick_until(service, ended(api, job), what="the time limit")
    assert api.get(f"/v1/jobs/{job}").json()["state"] == "timed_out"
    service.close()


def test_logs_follow_metrics_and_outputs(api: TestClient, service: UseCases,
                                         tmp_path: Path) -> None:
    gate = tmp_path / "go"
    script = (
        'echo "step one"; '
        'printf \'{"step": 1, "loss": 0.5}\\n{"step": 2, "loss": 0.25}\\nnot json\\n\' '
        '>> "$NAI_METRICS_FILE"; '
        'head -c 300000 /dev/urandom > "$NAI_OUTPUT_DIR/weights.bin"; '
        'mkdir "$NAI_OUTPUT_DIR/sub"; echo hi > "$NAI_OUTPUT_DIR/sub/note.txt"; '
        f'while [ ! -e {gate} ]; do sleep 0.02; done; echo "done" 1>&2'
    )
    job = submit(api, script, gpus=0)["id"]
    tick_until(service, lambda: b"step one" in api.get(f"/v1/jobs/{job}/logs").content,
               what="the first log line")
    assert api.get(f"/v1/jobs/{job}/logs", params={"offset": 5}).text.startswith("one")
    assert api.get(f"/v1/jobs/{job}/outputs").status_code == 409

    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            service.tick()
            stop.wait(0.02)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        gate.touch()
        followed = api.get(f"/v1/jobs/{job}/logs", params={"follow": "true"}).text
    finally:
        stop.set()
        thread.join()
    assert followed == "step one\ndone\n"

    page = api.get(f"/v1/jobs/{job}/metrics").json()
    assert page["metrics"] == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]
    assert page["skipped"] == 1 and page["next"] == 3
    assert api.get(f"/v1/jobs/{job}/metrics", params={"since": 3}).json()["metrics"] == []

    job_dir = service.runtime.job_dir(job)
    tree = api.get(f"/v1/jobs/{job}/outputs").json()
    assert sorted(e["path"] for e in tree["entries"]) == ["sub/note.txt", "weights.bin"]
    archive = api.get(f"/v1/jobs/{job}/outputs/archive").content
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        got = tar.extractfile("weights.bin").read()
    assert got == (job_dir / "output" / "weights.bin").read_bytes()


def test_listing_filters_and_pagination(api: TestClient, service: UseCases) -> None:
    ids = [submit(api, "true", gpus=0)["id"] for _ in range(5)]
    listing = api.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in listing["jobs"]] == ids[::-1][:2] and listing["total"] == 5
    assert [j["id"] for j in api.get("/v1/jobs", params={"limit": 2, "offset": 4}).json()[
        "jobs"]] == [ids[0]]
    assert api.get("/v1/jobs", params={"state": "queued", "scope": "mine"}).json()["total"] == 5
    assert api.get("/v1/jobs", params={"state": "nope"}).status_code == 400
    assert api.get("/v1/jobs/999").status_code == 404


def test_foreign_gpu_use(api: TestClient, service: UseCases) -> None:
    service.gpus.add_foreign(0, pid=os.getpid(), used_memory=70 << 30)
    first = submit(api, "sleep 5", gpus=1)["id"]
    service.tick()
    assert api.get(f"/v1/jobs/{first}").json()["gpus"] == [1]
    gpus = api.get("/v1/gpus").json()["gpus"]
    assert gpus[0]["foreign"][0]["pid"] == os.getpid() and gpus[0]["job"] is None
    big = submit(api, "true", gpus=1, gpu_memory="20GiB")["id"]
    small = submit(api, "true", gpus=1, gpu_memory="8GiB")["id"]
    service.tick()
    assert api.get(f"/v1/jobs/{big}").json()["reason"] == "ForeignUse"
    tick_until(service, ended(api, small), what="the small job to run on the foreign GPU")
    api.delete(f"/v1/jobs/{first}")
    api.delete(f"/v1/jobs/{big}")


def test_a_job_on_a_gpu_it_was_not_given_is_reported(api: TestClient, service: UseCases,
                                                      tmp_path: Path) -> None:
    """Without device cgroups a job can set CUDA_VISIBLE_DEVICES itself: NVML still
    shows its process on the other GPU, which is reported as that job's and not lent."""
    gate = tmp_path / "go"
    job = submit(api, f"while [ ! -e {gate} ]; do sleep 0.02; done", gpus=1)["id"]
    service.tick()
    info = api.get(f"/v1/jobs/{job}").json()
    assert info["state"] == "running"
    own, other = info["gpus"][0], 1 - info["gpus"][0]
    pid = service.store.get_job(job)["pid"]
    service.gpus.add_foreign(own, pid=pid, used_memory=1 << 30)  # its own: fine
    service.gpus.add_foreign(other, pid=pid, used_memory=70 << 30)
    service.tick()
    gpus = {g["index"]: g for g in api.get("/v1/gpus").json()["gpus"]}
    assert gpus[own]["foreign"] == []
    assert gpus[other]["foreign"] == [{"pid": pid, "user": gpus[other]["foreign"][0]["user"],
                                       "used_memory": 70 << 30, "job": job}]
    second = submit(api, "true", gpus=1)["id"]
    service.tick()
    assert api.get(f"/v1/jobs/{second}").json()["reason"] == "ForeignUse"
    gate.touch()
    service.gpus.clear_foreign()
    tick_until(service, ended(api, job, second), what="both jobs to end")


def test_drain_holds_new_jobs(api: TestClient, service: UseCases) -> None:
    api.put("/v1/drain", json={"drained": True})
    job = submit(api, "true", gpus=1)["id"]
    service.tick()
    assert api.get(f"/v1/jobs/{job}").json()["reason"] == "Drained"
    api.put("/v1/drain", json={"drained": False})
    tick_until(service, ended(api, job), what="the job after drain off")


def test_restart_readopts_running_jobs_and_marks_vanished_lost(tmp_path: Path) -> None:
    state_dir = tmp_path / "s"
    gate = tmp_path / "go"
    first = make_service(state_dir)
    api = TestClient(AsPeer(create_app(first)), base_url="http://nai")
    keep = submit(api, f"while [ ! -e {gate} ]; do sleep 0.02; done; exit 4", gpus=1)["id"]
    vanish = submit(api, "sleep 60", gpus=1)["id"]
    first.tick()
    vanish_pid = first.store.get_job(vanish)["pid"]
    first.close()  # the daemon goes away; its jobs do not

    os.killpg(vanish_pid, 9)  # and the wrapper too: no exit status is written
    second = make_service(state_dir)
    api = TestClient(AsPeer(create_app(second)), base_url="http://nai")
    tick_until(second, lambda: state(api, vanish) == "lost", what="the vanished job")
    assert state(api, keep) == "running"
    gate.touch()
    tick_until(second, ended(api, keep), what="the re-adopted job to end")
    info = api.get(f"/v1/jobs/{keep}").json()
    assert (info["state"], info["exit_code"]) == ("failed", 4)
    second.close()


def test_a_gpu_job_on_a_server_without_gpus_says_how_to_run_on_cpu(tmp_path: Path) -> None:
    service = make_service(tmp_path / "state", gpus=0)
    try:
        with TestClient(AsPeer(create_app(service)), base_url="http://nai") as api:
            refused = api.post("/v1/jobs", json={"spec": {"command": "true"}})  # gpus: 1
            assert refused.status_code == 400
            assert refused.json()["error"]["message"] == (
                "gpus: 1 asked, but this server has 0 GPU(s); pass --gpus 0 (gpus: 0 in a "
                "job spec) for a CPU-only job")
            assert api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 0}}
                            ).status_code == 201
    finally:
        service.close()
