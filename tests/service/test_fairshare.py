"""Fair share, quotas, preemption and backfill estimates in the daemon: a multi-user
service on fake GPUs with a clock the test moves, running real job processes.

The test's own unix user submits through the in-process API; a second user ("light")
submits through the service. "light" has no unix account here, and a root daemon never
runs a job without one, so the fixture lends "light" the test user's account (their
jobs then run as the test's user)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nai_server.app.accounts import Caller
from nai_server.app.usage import SETTING, Run, charge, hours_used
from nai_server.core.fairshare import accrue, decay
from nai_server.core.spec import spec_from_dict
from nai_server.testing import make_service, tick_until
from tests.service.multi_user import ENDED, ME, T0, Server, serve

HOUR = 3600.0
DAY = 86_400.0


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    with serve(tmp_path, monkeypatch) as running:
        yield running


def test_light_user_starts_before_the_heavy_users_backlog(server: Server) -> None:
    heavy = [server.submit(server.gated(f"h{i}"), gpus=1, time_limit="4h") for i in range(4)]
    server.service.tick()
    assert [server.state(j) for j in heavy] == ["running", "running", "queued", "queued"]
    server.now[0] += 2 * HOUR  # two GPUs for two hours: the heavy user is far over share
    server.service.tick()
    light = server.submit_as("light", server.gated("light"), gpus=1, time_limit="4h")
    server.service.tick()
    assert server.job(light)["reason"] == "Resources"

    server.open("h0")
    server.wait(heavy[0], "succeeded")
    assert server.wait(light, "running")["user"] == "light"
    # The heavy user's older jobs wait for the next GPU.
    assert [server.state(j) for j in heavy[2:]] == ["queued", "queued"]
    saved = server.service.store.get_setting(SETTING)
    assert saved["usage"][f"user:{ME}"] > saved["usage"].get("user:light", 0.0)


def test_quotas_hold_jobs_with_their_reason(server: Server) -> None:
    quota = server.api.put(f"/v1/users/{ME}/quota", json={"max_gpus": 1})
    assert quota.status_code == 200, quota.text
    first = server.submit(server.gated("a"), gpus=1, time_limit="4h")
    second = server.submit("echo second", gpus=1)
    server.service.tick()
    assert server.state(first) == "running"
    assert server.job(second)["reason"] == "QuotaGPUs"
    # The quota is the user's: someone else gets the GPU it keeps free.
    other = server.submit_as("light", "true", gpus=1)
    server.wait(other, "succeeded")

    # One GPU-hour a day: the running job uses it up, and the next waits for the
    # rolling window to move past that hour.
    server.api.put(f"/v1/users/{ME}/quota", json={"gpu_hours": 1, "period_days": 1})
    server.now[0] += HOUR + 1
    server.open("a")
    server.wait(first, "succeeded")
    server.service.tick()
    assert server.job(second)["reason"] == "QuotaHours"
    server.now[0] += DAY
    assert server.wait(second, "succeeded")["exit_code"] == 0


CHECKPOINTING = (
    'if [ -e "$NAI_OUTPUT_DIR/ckpt" ]; then '
    '  echo "resumed from $(cat "$NAI_OUTPUT_DIR/ckpt")"; exit 0; fi; '
    'echo "started fresh"; '
    "trap 'echo step-7 > \"$NAI_OUTPUT_DIR/ckpt\"; echo checkpointed; exit 0' TERM; "
    "while :; do sleep 0.02; done"
)


def test_preemptible_job_checkpoints_is_requeued_and_resumes(server: Server) -> None:
    big = server.submit(CHECKPOINTING, gpus=2, time_limit="4h", preemptible=True)
    server.wait(big, "running")
    job_dir = server.service.runtime.job_dir(big)
    server.now[0] += 600  # past preempt_min_run (5 min); the user is now over share

    light = server.submit_as("light", server.gated("light"), gpus=1, time_limit="1h")
    server.service.tick()
    info = server.job(big)
    assert info["state"] == "running" and f"preempted to let job {light} start" in info["message"]
    waiting = server.job(light)
    assert waiting["state"] == "queued" and waiting["est_start"] == server.now[0] + 30

    requeued = server.wait(big, "queued")
    assert f"to let job {light} start; requeued with 10m of service" in requeued["message"]
    assert requeued["gpus"] == [] and requeued["submitted_at"] == T0
    assert server.service.store.get_job(big)["attained"] == 600
    assert server.wait(light, "running")["gpus"]
    # While it waits, its owner swaps a file the daemon opens for a link: not followed.
    (job_dir / "metrics.jsonl").unlink()
    (job_dir / "metrics.jsonl").symlink_to(server.gates / "planted")
    server.service.tick()
    assert server.job(big)["reason"] in {"Resources", "Priority"}

    server.now[0] += 60
    server.open("light")
    server.wait(light, "succeeded")
    done = server.wait(big, "succeeded")
    assert done["exit_code"] == 0 and server.service.runtime.job_dir(big) == job_dir
    log = server.api.get(f"/v1/jobs/{big}/logs").text
    lines = [line for line in log.splitlines() if line != "Terminated"]  # sh on `sleep`
    assert lines == ["started fresh", "checkpointed", "resumed from step-7"]
    ckpt = server.api.get(f"/v1/jobs/{big}/outputs/file", params={"path": "ckpt"})
    assert ckpt.text == "step-7\n"
    assert not (server.gates / "planted").exists()
    assert not (job_dir / "metrics.jsonl").is_symlink()


def test_cancel_while_being_preempted_ends_the_job(server: Server) -> None:
    big = server.submit(
        "trap 'sleep 0.2; exit 0' TERM; while :; do sleep 0.02; done", gpus=2, preemptible=True
    )
    server.wait(big, "running")
    server.now[0] += 600
    light = server.submit_as("light", "true", gpus=1)
    server.service.tick()
    assert "being preempted" in server.job(big)["message"]
    server.api.delete(f"/v1/jobs/{big}")
    assert server.wait(big, *ENDED)["state"] == "cancelled"
    server.wait(light, "succeeded")


def test_the_gpus_a_preemption_frees_go_to_the_job_it_was_for(server: Server) -> None:
    # The test's user: a preemptible job on both GPUs, and a short job queued behind it
    # that ranks ahead of light's long one (short jobs first) but may not stop it.
    gate = server.gates / "big"  # it checkpoints until the test opens it (10 s at most)
    big = server.submit(
        f"trap 'for i in $(seq 500); do [ -e {gate} ] && break; sleep 0.02; done; exit 0' TERM;"
        " while :; do sleep 0.02; done",
        gpus=2, preemptible=True,
    )
    server.wait(big, "running")
    short = server.submit(server.gated("short"), gpus=2, time_limit="10m")
    server.now[0] += 600  # past preempt_min_run; the test's user is now over share
    light = server.submit_as("light", server.gated("light"), gpus=2, time_limit="10h")
    server.service.tick()
    assert f"preempted to let job {light} start" in server.job(big)["message"]
    stopped_at = server.now[0]
    server.now[0] += 5
    for _ in range(3):  # while it stops, light's job waits for it, and only for it
        server.service.tick()
        assert server.state(big) == "running" and server.state(short) == "queued"
        assert server.job(light)["est_start"] == stopped_at + 30  # the grace period
    server.open("big")
    server.wait(big, "queued")
    # Freed for light's job: it starts on them, while the short job waits on.
    tick_until(server.service, lambda: server.state(light) != "queued"
               or server.state(short) != "queued", what="a job to start on the freed GPUs")
    assert server.state(short) == "queued"
    assert server.wait(light, "running")["gpus"] == [0, 1]
    server.open("light")
    server.wait(short, "running")  # then the order again
    server.open("short")


def test_backfill_estimate_is_reported(server: Server) -> None:
    running = server.submit(server.gated("a"), gpus=1, time_limit="1h")
    server.wait(running, "running")
    server.now[0] += 60
    wide = server.submit("true", gpus=2, time_limit="1h")
    short = server.submit(server.gated("d"), gpus=1, time_limit="30m")
    server.service.tick()
    info = server.job(wide)
    assert (info["state"], info["reason"]) == ("queued", "Resources")
    assert info["est_start"] == T0 + HOUR  # when the running job's time limit is up
    # The short job fits before then on the free GPU: it is backfilled.
    assert server.state(short) == "running"
    listed = {j["id"]: j for j in server.api.get("/v1/jobs").json()["jobs"]}
    assert listed[wide]["est_start"] == T0 + HOUR


def test_usage_is_saved_and_recomputed_after_a_restart(tmp_path: Path) -> None:
    now = [T0]
    state_dir = tmp_path / "s"
    gate = tmp_path / "go"
    first = make_service(state_dir, mode="multi-user", clock=lambda: now[0])
    caller = Caller(ME, os.getuid(), True)
    spec = spec_from_dict({"command": f"while [ ! -e {gate} ]; do sleep 0.02; done"})
    job_id = first.jobs.submit(caller, spec, None).id
    first.tick()
    now[0] += HOUR
    gate.touch()
    tick_until(
        first, lambda: first.store.get_job(job_id)["state"] == "succeeded", what="the job to end"
    )
    half_life = first.runtime.tuning.half_life
    first.close()

    now[0] += DAY
    expected = decay(accrue(0.0, 1, HOUR, half_life), DAY, half_life)
    second = make_service(state_dir, mode="multi-user", clock=lambda: now[0])
    second.tick()
    assert second.runtime.usage.usage[f"user:{ME}"] == pytest.approx(expected)
    second.store.set_setting(SETTING, None)  # as if never saved: worked out from records
    second.close()
    third = make_service(state_dir, mode="multi-user", clock=lambda: now[0])
    third.tick()
    assert third.runtime.usage.usage[f"user:{ME}"] == pytest.approx(expected)
    third.close()


def test_charging_in_steps_equals_charging_at_once() -> None:
    half_life = 7 * DAY
    runs = [Run(1, ("user:a", "group:g"), 0.0, 5 * HOUR, 2), Run(2, ("user:b",), HOUR, None, 1)]
    at_once = charge({}, float("-inf"), runs, 10 * HOUR, half_life)
    usage, as_of = {}, float("-inf")
    for now in (2 * HOUR, 2.5 * HOUR, 7 * HOUR, 10 * HOUR):
        usage, as_of = charge(usage, as_of, runs, now, half_life), now
    assert usage == pytest.approx(at_once)
    assert at_once["group:g"] == at_once["user:a"]
    assert at_once["user:b"] == pytest.approx(accrue(0.0, 1, 9 * HOUR, half_life))
    # Runs ten half-lives old are forgotten.
    assert charge({}, float("-inf"), runs, 71 * DAY, half_life) == {
        "user:b": pytest.approx(accrue(0.0, 1, 71 * DAY - HOUR, half_life))
    }


def test_hours_used_in_a_rolling_period() -> None:
    runs = [Run(1, ("user:a",), 0.0, 2 * HOUR, 2), Run(2, ("user:a",), 20 * HOUR, None, 1)]
    used = hours_used(runs, 25 * HOUR, {"user:a": DAY, "user:b": DAY})
    assert used == {"user:a": pytest.approx(1 * 2 + 5), "user:b": 0.0}


def test_a_job_kept_from_a_free_gpu_is_told_why(server: Server) -> None:
    running = server.submit(server.gated("a"), gpus=1, time_limit="1h")
    server.wait(running, "running")
    wide = server.submit("true", gpus=2, time_limit="1h")
    long = server.submit("true", gpus=1, time_limit="2h")  # would hold GPU 1 past then
    server.service.tick()
    words = f"GPU 1 is kept for job {wide} (2 GPUs), which starts when job {running} ends"
    info = server.job(long)
    assert (info["state"], info["reason"], info["why"]) == ("queued", "Priority", words)
    assert server.job(wide)["why"] == words
    assert server.job(running)["why"] is None
    server.open("a")
    server.wait(wide, *ENDED)
    assert server.job(long)["why"] is None


def test_est_start_counts_on_run_times_learned_from_finished_jobs(server: Server) -> None:
    first = server.submit(server.gated("a"), gpus=1, time_limit="1h")
    server.wait(first, "running")
    server.now[0] += 360  # a tenth of its limit
    server.open("a")
    server.wait(first, "succeeded")
    running = server.submit(server.gated("b"), gpus=1, time_limit="10h")
    started = server.wait(running, "running")["started_at"]
    wide = server.submit("true", gpus=2, time_limit="10h")
    server.service.tick()
    # By its limit job `running` ends in 10 h; by what this user's jobs use, in 1 h.
    assert server.job(wide)["est_start"] == pytest.approx(started + HOUR)
    dry = server.api.post("/v1/jobs?dry_run=1",
                          json={"spec": {"command": "true", "gpus": 2, "time_limit": "10h"}})
    assert dry.status_code == 200, dry.text
    # Behind `wide`, which is expected to run an hour of its ten.
    assert dry.json()["est_start"] == pytest.approx(started + 2 * HOUR)
    server.open("b")


def test_a_job_whose_owner_has_no_account_never_runs_as_root(server: Server,
                                                              tmp_path: Path) -> None:
    # The account went away between submit and launch (removed, or LDAP did not
    # answer): the root daemon fails the job rather than run it as itself.
    ran = tmp_path / "ran"
    job = server.submit_as("ghost", f"id -u > {ran}", gpus=0)
    info = server.wait(job, *ENDED)
    assert info["state"] == "failed"
    assert "no unix account 'ghost'" in info["message"]
    assert not ran.exists()
