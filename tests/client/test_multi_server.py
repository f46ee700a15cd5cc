"""Several servers from one client, through `nai`'s real `main` against two in-process
servers ("a" and "b") and one that never answers ("c"): merged listings with a SERVER
column, a down server said in one line, `submit --dry-run`, `submit --server auto`, and
`dataset copy` sending only the blobs the target lacks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app.use_cases import UseCases
from nai_server.protocol import ConnectionFailed
from nai_server.testing import AsPeer, make_service, tick_until
from nai_tui import cli
from nai_tui.cli import commands
from nai_tui.config import ClientConfig, ServerEntry
from nai_tui.remote.client import ServerClient


@pytest.fixture
def other(tmp_path: Path) -> Iterator[UseCases]:
    svc = make_service(tmp_path / "state-b")
    yield svc
    svc.close()


@pytest.fixture
def nai(service: UseCases, other: UseCases, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """`nai(*args)` → (status, stdout, stderr) with servers a, b (in process) and c
    (refuses connections); a server named "slow" answers only after `nai.release()`."""
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("NAI_SERVER", raising=False)
    config = ClientConfig.load()
    for name in ("a", "b", "c"):
        config.add(ServerEntry(name, f"host-{name}"))
    config.save()
    services = {"a": service, "b": other}

    @contextlib.contextmanager
    def connect(entry: ServerEntry) -> Iterator[ServerClient]:
        if entry.name == "slow":  # answers only once the test lets it
            released.wait(60)
        if entry.name not in services:
            raise ConnectionFailed(f"{entry.name}: connection refused\n(second line)")
        with TestClient(AsPeer(create_app(services[entry.name])),
                        base_url="http://nai") as http:
            yield ServerClient(http, name=entry.name)

    released = threading.Event()
    monkeypatch.setattr(commands, "connect", connect)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            status = cli.main(list(args))
        except SystemExit as exc:
            status = int(exc.code or 0)
        out = capsys.readouterr()
        return status, out.out, out.err

    run.release = released.set  # type: ignore[attr-defined]
    yield run
    released.set()


def _folder(tmp_path: Path, name: str, spec: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "nai.yaml").write_text(spec)
    (folder / "train.py").write_text("print('hi')\n")
    return folder


def test_jobs_and_gpus_of_every_server_side_by_side(nai: Any, tmp_path: Path) -> None:
    folder = _folder(tmp_path, "job", "command: sleep 30\ngpus: 1\ntime_limit: 1h\n")
    for server in ("a", "b"):
        status, _, err = nai("--server", server, "submit", str(folder), "--name", f"on-{server}")
        assert status == 0, err
    status, out, err = nai("jobs", "--all-servers")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["SERVER", "ID", "NAME"]
    assert sorted(line.split()[0] + ":" + line.split()[2] for line in lines[1:]) == [
        "a:on-a", "b:on-b"]
    assert err.strip() == "c: down: c: connection refused (second line)"  # one line
    status, out, _ = nai("jobs", "--all-servers", "--json")
    listing = json.loads(out)
    assert sorted((j["server"], j["name"]) for j in listing["jobs"]) == [
        ("a", "on-a"), ("b", "on-b")]
    assert [(s["name"], s["status"]) for s in listing["servers"]] == [
        ("a", "up"), ("b", "up"), ("c", "down")]
    status, out, _ = nai("gpus", "--all-servers", "--json")
    gpus = json.loads(out)
    assert sorted((g["server"], g["index"]) for g in gpus["gpus"]) == [
        ("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    status, out, err = nai("gpus", "--all-servers")
    assert out.splitlines()[0].split()[:2] == ["SERVER", "GPU"] and "c: down" in err


def test_a_server_that_does_not_answer_in_time_is_left_behind(nai: Any) -> None:
    config = ClientConfig.load()
    config.add(ServerEntry("slow", "host-slow"))
    config.save()
    status, out, err = nai("gpus", "--all-servers", "--timeout", "5", "--json")
    assert status == 0, err
    states = {s["name"]: (s["status"], s["error"]) for s in json.loads(out)["servers"]}
    assert states["slow"] == ("down", "no answer in 5s") and states["a"][0] == "up"
    nai.release()


def test_every_server_down_exits_1(nai: Any, tmp_path: Path) -> None:
    config = ClientConfig.load()
    config.remove("a")
    config.remove("b")
    config.save()
    status, out, err = nai("jobs", "--all-servers", "--json")
    assert status == 1 and json.loads(out)["jobs"] == [] and "c: down" in err


def test_a_dry_run_submits_nothing_and_says_when_it_would_start(
        nai: Any, tmp_path: Path, service: UseCases) -> None:
    folder = _folder(tmp_path, "job", "command: python train.py\ngpus: 2\ntime_limit: 2h\n")
    status, out, err = nai("--server", "a", "submit", str(folder), "--dry-run", "--gpus", "1")
    assert status == 0, err
    assert "gpus:       1" in out and "starts now" in out and "python train.py" in out
    assert "syncing" not in err  # the code did not travel
    status, out, _ = nai("--server", "a", "submit", str(folder), "--dry-run", "--json")
    job = json.loads(out)
    assert job["id"] == 0 and job["est_start"] == job["submitted_at"]
    assert json.loads(nai("--server", "a", "jobs", "--json")[1]) == []
    status, _, err = nai("--server", "a", "submit", str(folder), "--dry-run", "--gpus", "9")
    assert status == 1 and "this server has 2 GPU(s)" in err


def test_server_auto_submits_where_the_job_starts_first(
        nai: Any, tmp_path: Path, service: UseCases) -> None:
    busy = _folder(tmp_path, "busy", "command: sleep 60\ngpus: 2\ntime_limit: 1h\n")
    status, out, err = nai("--server", "a", "submit", str(busy), "--name", "busy", "--json")
    assert status == 0, err
    first = json.loads(out)["id"]
    tick_until(service, lambda: json.loads(nai("--server", "a", "show", str(first),
                                                "--json")[1])["state"] == "running",
               what="a's job to run")
    folder = _folder(tmp_path, "job", "command: python train.py\ngpus: 1\ntime_limit: 1h\n")
    status, out, err = nai("--server", "auto", "submit", str(folder), "--name", "job", "--json")
    assert status == 0, err
    assert "chose b: starts now" in err and "a: starts in about" in err
    assert "c: down" in err and json.loads(out)["server"] == "b"
    listing = json.loads(nai("jobs", "--all-servers", "--json")[1])["jobs"]
    assert sorted((j["server"], j["name"]) for j in listing) == [("a", "busy"), ("b", "job")]
    status, _, err = nai("--server", "auto", "jobs")
    assert status == 2 and "for `nai submit` only" in err


def test_server_auto_passes_over_a_server_without_the_dataset(
        nai: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.txt").write_text("x\n")
    assert nai("--server", "b", "dataset", "push", "cifar", str(data))[0] == 0
    folder = _folder(tmp_path, "job", "command: ls $NAI_DATASET_DIR\ngpus: 1\n"
                     "dataset: cifar\n")
    status, out, err = nai("submit", str(folder), "--dry-run", "--server", "auto")
    assert status == 0, err
    assert "would submit" in out and "to b" in out and "cifar@1" in out
    assert "a: refused:" in err and "cifar" in err.split("a: refused:")[1]
    assert "nai dataset copy cifar@1 --from b --to a" in err
    config = ClientConfig.load()
    config.remove("b")
    config.save()
    status, _, err = nai("--server", "auto", "submit", str(folder))
    assert status == 1 and "no server can take this job" in err


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_dataset_copy_sends_only_the_blobs_the_target_lacks(nai: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "shared.bin").write_bytes(b"s" * 70_000)
    (data / "sub" / "new.bin").write_bytes(b"n" * 5_000)
    (data / "sub" / "twin.bin").write_bytes(b"n" * 5_000)  # same blob, two paths
    (data / "sub" / "link").symlink_to("new.bin")
    assert nai("--server", "a", "dataset", "push", "d", str(data), "--tag", "best",
               "--description", "the set")[0] == 0
    half = tmp_path / "half"
    half.mkdir()
    (half / "shared.bin").write_bytes(b"s" * 70_000)
    assert nai("--server", "b", "dataset", "push", "other", str(half))[0] == 0
    status, out, err = nai("dataset", "copy", "d@1", "--from", "a", "--to", "b", "--json")
    assert status == 0, err
    done = json.loads(out)
    assert (done["blobs_sent"], done["blobs_total"], done["bytes_sent"]) == (1, 2, 5_000)
    assert done["version"] == 1
    shown = json.loads(nai("--server", "b", "dataset", "show", "d@1", "--json")[1])
    assert (shown["tag"], shown["description"]) == ("best", "the set")
    source = json.loads(nai("--server", "a", "dataset", "show", "d@1", "--json")[1])
    assert shown["tree_id"] == source["tree_id"]
    assert nai("--server", "b", "dataset", "pull", "d", "--to", str(tmp_path / "got"))[0] == 0
    assert _digests(tmp_path / "got") == _digests(data)
    assert (tmp_path / "got" / "sub" / "link").readlink() == Path("new.bin")
    # Again: nothing travels, and the latest version already holds the files.
    again = json.loads(nai("dataset", "copy", "d", "--from", "a", "--to", "b", "--json")[1])
    assert (again["blobs_sent"], again["unchanged"]) == (0, True)
    status, _, err = nai("dataset", "copy", "d", "--from", "a", "--to", "a")
    assert status == 2 and "two servers" in err


def test_model_copy_keeps_the_metadata_and_sharing_asked_for(nai: Any, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "w.bin").write_bytes(b"w" * 1000)
    (tmp_path / "m.json").write_text('{"accuracy": 0.93}')
    assert nai("--server", "a", "model", "push", "m", str(weights), "--metrics",
               str(tmp_path / "m.json"), "--finetune-command", "python ft.py")[0] == 0
    assert nai("--server", "a", "model", "push", "m", str(weights), "--allow-same")[0] == 0
    status, out, err = nai("model", "copy", "m@1", "--from", "a", "--to", "b", "--shared")
    assert status == 0 and out.strip() == "m@1", err
    assert "1 of 1 blob(s) sent" in err
    copied = json.loads(nai("--server", "b", "model", "show", "m", "--json")[1])
    assert copied["visibility"] == "shared"
    version = json.loads(nai("--server", "b", "model", "show", "m@1", "--json")[1])
    assert version["metadata"] == {"metrics": {"accuracy": 0.93},
                                   "finetune_command": "python ft.py"}
