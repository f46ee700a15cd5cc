"""`nai dataset ...` and `nai model ...` against a real personal daemon: push, list,
show, pull byte-identical, a new version that sends only the changed file, tags,
sharing, removal, and errors on stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nai_server.testing import wait_for
from nai_tui import cli
from nai_tui.remote.client import ServerClient

BIN = Path(sys.executable).parent


def nai(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nai"), *args], env=env, capture_output=True, text=True,
                          timeout=120)


def job_of(run: subprocess.CompletedProcess[str]) -> str:
    """The id of the job `nai submit --follow` (or `finetune --follow`) submitted: said
    on stderr, stdout being the job's log."""
    found = re.search(r"^submitted job (\d+) ", run.stderr, re.M)
    assert found, run.stderr
    return found[1]


def make_dataset(root: Path, files: int = 20, size: int = 50_000) -> Path:
    root.mkdir(parents=True)
    for i in range(files):
        part = root / f"part-{i // 10}"
        part.mkdir(exist_ok=True)
        (part / f"shard-{i:03d}.bin").write_bytes(os.urandom(size))
    (root / "labels.csv").write_text(f"# {root.name}\nid,label\n" + "".join(f"{i},{i % 10}\n"
                                                            for i in range(1000)))
    return root


def tree_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_push_list_show_pull(env: dict[str, str], tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "cifar")
    pushed = nai(env, "dataset", "push", "cifar", str(data), "--description", "tiny images",
                 "--tag", "first")
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == "cifar@1"
    assert "syncing" in pushed.stderr and "21 files" in pushed.stderr

    listing = json.loads(nai(env, "dataset", "list", "--json").stdout)
    mine = next(e for e in listing if e["name"] == "cifar")
    assert (mine["latest"], mine["latest_tag"], mine["files"]) == (1, "first", 21)
    assert mine["description"] == "tiny images" and mine["visibility"] == "private"
    table = nai(env, "dataset", "list").stdout
    assert table.splitlines()[0].split()[:3] == ["NAME", "LATEST", "TAG"] and "cifar" in table

    shown = json.loads(nai(env, "dataset", "show", "cifar", "--json").stdout)
    assert [v["version"] for v in shown["versions"]] == [1]
    version = json.loads(nai(env, "dataset", "show", "cifar@first", "--json").stdout)
    assert version["version"] == 1 and version["files"] == 21
    human = nai(env, "dataset", "show", "cifar@1").stdout
    assert "cifar@1 (first)" in human and "used by:  no jobs" in human

    out = tmp_path / "pulled"
    pulled = nai(env, "dataset", "pull", "cifar", "--to", str(out))
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == str(out)
    assert tree_files(out) == tree_files(data)
    again = json.loads(nai(env, "dataset", "pull", "cifar@1", "--to", str(out),
                           "--json").stdout)
    assert again["downloaded"] == 0 and again["skipped"] == 21 and again["kept"] == []


def test_pull_keeps_a_local_edit_says_so_and_exits_3_unless_forced(
        env: dict[str, str], tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "edits", files=3)
    assert nai(env, "dataset", "push", "edits", str(data)).returncode == 0
    out = tmp_path / "pulled"
    assert nai(env, "dataset", "pull", "edits", "--to", str(out)).returncode == 0
    (out / "labels.csv").write_text("id,label\n0,cat  # fixed by hand\n")
    leftover = out / "part-0" / ".nai-pull-k3j4h5"  # from an older, killed nai
    leftover.write_bytes(b"half")
    os.utime(leftover, (1_600_000_000, 1_600_000_000))

    kept = nai(env, "dataset", "pull", "edits", "--to", str(out))
    assert kept.returncode == 5, kept.stderr
    assert kept.stdout.strip() == str(out)
    assert ("not overwritten: labels.csv (changed here since nai pulled it)"
            in kept.stderr)
    assert "1 kept as they are here (--force overwrites them)" in kept.stderr
    assert "removed 1 temporary file(s) an interrupted pull left" in kept.stderr
    assert not leftover.exists()
    assert "fixed by hand" in (out / "labels.csv").read_text()

    as_json = nai(env, "dataset", "pull", "edits", "--to", str(out), "--json")
    assert as_json.returncode == 5
    answer = json.loads(as_json.stdout)
    assert answer["kept"] == [
        {"path": "labels.csv", "reason": "changed here since nai pulled it"}]
    assert (answer["resumed"], answer["stale_temporaries_removed"]) == (0, 0)

    forced = nai(env, "dataset", "pull", "edits", "--to", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert tree_files(out) == tree_files(data)


# A `nai dataset pull` that hangs in the middle of a file, until it is killed.
STALLING_PULL = """
import sys, threading
from nai_tui import cli
from nai_tui.sync import pull
real = pull._archive
def stalls(*args):
    chunks = real(*args)
    yield next(chunks)
    threading.Event().wait()
pull._archive = stalls
sys.exit(cli.main(["dataset", "pull", "ckpt", "--to", sys.argv[1]]))
"""


def test_a_pull_killed_mid_file_is_resumed_from_where_it_stopped(
        env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "ckpt"
    data.mkdir()
    weights = os.urandom(6 * 1024 * 1024)
    (data / "model.bin").write_bytes(weights)
    assert nai(env, "dataset", "push", "ckpt", str(data)).returncode == 0
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", STALLING_PULL, str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: [p for p in out.glob(".nai-pull-*") if p.stat().st_size],
                 timeout=60, what="the first bytes of model.bin")
    finally:
        child.kill()  # SIGKILL: no clean-up of its own
        child.wait()
    [partial] = out.glob(".nai-pull-*")
    have = partial.stat().st_size
    assert 0 < have < len(weights)

    again = nai(env, "dataset", "pull", "ckpt", "--to", str(out), "--json")
    assert again.returncode == 0, again.stderr
    body = json.loads(again.stdout)
    assert (body["resumed"], body["downloaded"]) == (1, 1)
    assert body["bytes"] == len(weights) - have  # only the rest travelled
    assert "resumed 1 file(s) from where an interrupted download stopped" in again.stderr
    assert (out / "model.bin").read_bytes() == weights
    assert list(out.glob(".nai-pull-*")) == []


def test_new_version_with_one_changed_file_sends_one_blob(
        env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for key in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(key, env[key])
    uploads: list[dict[str, Any]] = []
    real = ServerClient.upload_pack

    def counting(self: ServerClient, stream: Any) -> dict[str, Any]:
        result = real(self, stream)
        uploads.append(result)
        return result

    monkeypatch.setattr(ServerClient, "upload_pack", counting)
    data = make_dataset(tmp_path / "big", files=40, size=100_000)
    assert cli.main(["dataset", "push", "big", str(data)]) == 0
    assert [u["stored"] for u in uploads] == [41]

    uploads.clear()
    (data / "part-2" / "shard-025.bin").write_bytes(os.urandom(100_000))
    assert cli.main(["dataset", "push", "big", str(data)]) == 0
    assert [u["stored"] for u in uploads] == [1]
    assert uploads[0]["bytes"] < 100_000 + 2048  # the file and its tar framing
    assert capsys.readouterr().out.splitlines()[-1] == "big@2"

    uploads.clear()  # the same folder again: nothing sent, nothing recorded
    capsys.readouterr()
    assert cli.main(["dataset", "push", "big", str(data), "--tag", "same"]) == 0
    assert uploads == []
    said = capsys.readouterr()
    assert said.out.splitlines() == ["big@2"]
    assert "dataset big: unchanged, still @2" in said.err and "--allow-same" in said.err
    assert "nai dataset tag big@2 same" in said.err
    shown = json.loads(nai(env, "dataset", "show", "big", "--json").stdout)
    assert [(v["version"], v["tag"]) for v in shown["versions"]] == [(1, None), (2, None)]

    # --allow-same records it anyway, as a new version of the same files.
    assert cli.main(["dataset", "push", "big", str(data), "--allow-same", "--json"]) == 0
    pushed = json.loads(capsys.readouterr().out)
    assert (pushed["version"], pushed["unchanged"]) == (3, False)
    shown = json.loads(nai(env, "dataset", "show", "big", "--json").stdout)
    trees = [v["tree_id"] for v in shown["versions"]]
    assert len(set(trees)) == 2 and trees[1] == trees[2]


def test_model_metrics_tags_sharing_and_removal(env: dict[str, str], tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.pt").write_bytes(b"\x00" * 1000)
    (tmp_path / "metrics.json").write_text('{"accuracy": 0.93, "loss": 0.2}')
    pushed = nai(env, "model", "push", "resnet", str(weights), "--metrics",
                 str(tmp_path / "metrics.json"), "--json")
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["metadata"] == {"metrics": {"accuracy": 0.93,
                                                                 "loss": 0.2}}
    (weights / "model.pt").write_bytes(b"\x01" * 1000)
    assert nai(env, "model", "push", "resnet", str(weights)).stdout.strip() == "resnet@2"

    tagged = nai(env, "model", "tag", "resnet@1", "best")
    assert tagged.returncode == 0 and tagged.stdout.strip() == "resnet@1"
    assert json.loads(nai(env, "model", "show", "resnet@best", "--json").stdout)["version"] == 1

    assert nai(env, "model", "share", "resnet", "--all").returncode == 0
    shown = json.loads(nai(env, "model", "show", "resnet", "--json").stdout)
    assert shown["visibility"] == "shared"
    assert nai(env, "model", "share", "resnet", "--group", "admins").returncode == 0
    assert json.loads(nai(env, "model", "show", "resnet", "--json").stdout)[
        "shared_with_groups"] == ["admins"]
    assert nai(env, "model", "unshare", "resnet", "--group", "admins").returncode == 0
    unshared = nai(env, "model", "unshare", "resnet")
    assert unshared.returncode == 0 and "readers are now owners" in unshared.stderr
    shown = json.loads(nai(env, "model", "show", "resnet", "--json").stdout)
    assert (shown["visibility"], shown["shared_with_groups"]) == ("private", [])

    one = nai(env, "model", "rm", "resnet@best")
    assert one.returncode == 0 and one.stdout.strip() == "resnet@1"
    gone = nai(env, "model", "rm", "resnet", "--json")
    assert json.loads(gone.stdout)["entry_removed"] is True
    assert "model resnet is gone" in gone.stderr
    assert nai(env, "model", "show", "resnet").returncode == 3


def test_errors_go_to_stderr(env: dict[str, str], tmp_path: Path) -> None:
    missing = nai(env, "dataset", "show", "nothing-here")
    assert missing.returncode == 3 and missing.stdout == ""
    assert "no dataset named 'nothing-here'" in missing.stderr
    no_folder = nai(env, "dataset", "push", "x", str(tmp_path / "no"))
    assert no_folder.returncode == 2 and "not a folder" in no_folder.stderr  # a usage slip
    bad_ref = nai(env, "dataset", "pull", "x@")
    assert bad_ref.returncode == 2 and "NAME@3" in bad_ref.stderr
    (tmp_path / "m").mkdir()
    (tmp_path / "bad.json").write_text("[1, 2]")
    bad = nai(env, "model", "push", "m", str(tmp_path / "m"), "--metrics",
              str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and "JSON object" in bad.stderr
    assert nai(env, "dataset").returncode == 2  # a verb is needed
    no_tag = nai(env, "dataset", "tag", "x")
    assert no_tag.returncode == 2 and "--clear" in no_tag.stderr


FINETUNE = Path(__file__).resolve().parents[2] / "jobs" / "finetune-numpy"


def test_finetune_in_one_command(env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "points"
    subprocess.run([sys.executable, str(FINETUNE / "make_data.py"), str(data)], check=True,
                   capture_output=True)
    pushed = nai(env, "model", "push", "linreg", str(FINETUNE / "model"),
                 "--finetune-command", "python train.py --epochs 5")
    assert pushed.returncode == 0, pushed.stderr
    assert nai(env, "dataset", "push", "points", str(data)).returncode == 0
    ran = nai(env, "finetune", "linreg", "--dataset", "points", "--gpus", "0",
              "--register-model", "linreg", "--follow")
    assert ran.returncode == 0, ran.stderr
    assert "starting from zeros" in ran.stdout
    assert "with dataset points@1, model linreg@1" in ran.stderr
    job = json.loads(nai(env, "show", job_of(ran), "--json").stdout)
    assert job["registered"] == "linreg@2"
    tuned = json.loads(nai(env, "model", "show", "linreg@2", "--json").stdout)
    assert tuned["metadata"]["lineage"] | {"code_tree": None} == {
        "job": job["id"], "code_tree": None, "datasets": ["points@1"], "models": ["linreg@1"]}
    # Version 2 holds weights only, and inherits what fine-tunes it: linreg@1's code
    # runs on its weights, again and again.
    assert tuned["metadata"]["finetune_command"] == "python train.py --epochs 5"
    assert tuned["metadata"]["finetune_code"] == "linreg@1"
    again = nai(env, "finetune", "linreg@2", "--dataset", "points", "--gpus", "0",
                "--register-model", "linreg", "--follow")
    assert again.returncode == 0, again.stderr
    assert "running the code of linreg@1 on the weights of linreg@2" in again.stderr
    assert "starting from" in again.stdout and "weights.npz" in again.stdout
    base = json.loads(nai(env, "model", "show", "linreg@1", "--json").stdout)
    second = json.loads(nai(env, "show", job_of(again), "--json").stdout)
    assert second["code_tree"] == base["tree_id"] and second["registered"] == "linreg@3"
    third = json.loads(nai(env, "model", "show", "linreg@3", "--json").stdout)
    assert third["metadata"]["finetune_code"] == "linreg@1"
    assert third["metadata"]["lineage"]["models"] == ["linreg@2"]
    # Registered after the fact, the same.
    later = json.loads(nai(env, "model", "register", str(second["id"]), "--name", "other",
                           "--json").stdout)
    assert later["metadata"]["finetune_code"] == "linreg@1"


def test_finetune_of_a_version_without_its_code(env: dict[str, str], tmp_path: Path) -> None:
    """Outputs of an ordinary job hold no code: finetune says how to give it one."""
    data = tmp_path / "points"
    subprocess.run([sys.executable, str(FINETUNE / "make_data.py"), str(data)], check=True,
                   capture_output=True)
    assert nai(env, "dataset", "push", "points", str(data)).returncode == 0
    ran = nai(env, "submit", str(FINETUNE / "model"), "--command", "python train.py --epochs 1",
              "--dataset", "points", "--gpus", "0", "--register-model", "plain", "--follow")
    assert ran.returncode == 0, ran.stderr
    job = job_of(ran)
    plain = json.loads(nai(env, "model", "show", "plain@1", "--json").stdout)
    assert "finetune_command" not in plain["metadata"]
    refused = nai(env, "finetune", "plain", "--dataset", "points")
    assert refused.returncode == 1
    assert "--command" in refused.stderr
    assert f"nai model register {job} --name plain --with-code" in refused.stderr
    coded = nai(env, "model", "register", job, "--name", "plain", "--with-code",
                "--path", "weights.npz")  # train.py is in the outputs too
    assert coded.returncode == 0, coded.stderr
    tuned = nai(env, "finetune", "plain@2", "--dataset", "points", "--gpus", "0", "--follow")
    assert tuned.returncode == 0 and "starting from" in tuned.stdout, tuned.stderr


def test_a_bad_name_or_tag_is_refused_in_words_before_any_upload(
        env: dict[str, str], tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "named", files=2)
    for args, said in [
            (("dataset", "push", "bad name", str(data)),
             "dataset name 'bad name': use letters, digits, '.', '_' or '-', starting with "
             "a letter or digit, at most 64"),
            (("model", "push", "m", str(data), "--tag", "bad tag!"),
             "--tag 'bad tag!': use letters, digits, '.', '_' or '-', starting with a letter,"),
            (("dataset", "push", "d", str(data), "--tag", "3"), "--tag '3': "),
            (("dataset", "push", "d", str(data), "--group", "a b"), "--group 'a b': "),
            # `$` matches before a last newline: the check must take the whole value
            (("dataset", "push", "abc\n", str(data)), "dataset name 'abc\\n': use letters"),
            (("dataset", "push", "d", str(data), "--tag", "v1\n"), "--tag 'v1\\n': use")]:
        refused = nai(env, *args)
        assert refused.returncode == 2, refused.stderr
        assert said in refused.stderr
        assert "syncing" not in refused.stderr and "pattern" not in refused.stderr
    assert "named" not in nai(env, "dataset", "list").stdout
    tag = nai(env, "dataset", "tag", "d3@1", "bad tag!")
    assert tag.returncode == 2 and "tag 'bad tag!': use letters" in tag.stderr
