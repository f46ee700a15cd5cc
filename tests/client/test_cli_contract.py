"""The CLI's contract for scripts (issue 17, item 12), through `nai`'s real `main`
against the in-process server: every command that prints data prints JSON that parses
with --json, --json is a usage error (2) where it means nothing, `nai server rm` is
`nai server remove`, and a thing the server does not know exits with status 3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nai_server.app.use_cases import UseCases
from nai_server.protocol import TERMINAL_STATES, Forbidden, NaiError, NotFound
from nai_server.testing import tick_until
from nai_tui.cli import contract
from nai_tui.config import ClientConfig
from nai_tui.remote.client import ServerClient


def _finished_job(nai: Any, client: ServerClient, service: UseCases, folder: Path) -> int:
    (folder / "nai.yaml").write_text("command: mkdir -p $NAI_OUTPUT_DIR && echo hi > "
                                     "$NAI_OUTPUT_DIR/out.txt\ngpus: 0\n")
    status, out, err = nai("submit", str(folder), "--json")
    assert status == 0, err
    job_id = int(json.loads(out)["id"])
    tick_until(service, lambda: client.job(job_id).state in TERMINAL_STATES,
               what="the job to end")
    return job_id


def test_every_data_command_prints_json(nai: Any, client: ServerClient, service: UseCases,
                                        tmp_path: Path) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    job_id = str(_finished_job(nai, client, service, folder))
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    ok: list[list[str]] = [
        ["jobs"], ["show", job_id], ["metrics", job_id], ["metrics", job_id, "--summary"],
        ["gpus"], ["whoami"], ["server", "list"], ["server"],
        ["pull", job_id, "--to", str(tmp_path / "out")],
        ["dataset", "push", "d", str(data)], ["dataset", "list"], ["dataset", "show", "d"],
        ["dataset", "show", "d@1"], ["dataset", "pull", "d", "--to", str(tmp_path / "d")],
        ["dataset", "tag", "d@1", "best"], ["dataset", "share", "d", "--all"],
        ["dataset", "unshare", "d"], ["dataset", "rm", "d"],
        ["finetune", "nothing-here", "--dataset", "d"],  # checked below: not found
    ]
    for args in ok[:-1]:
        status, out, err = nai(*args, "--json")
        assert status == 0, (args, err)
        json.loads(out)  # the whole of stdout is one JSON document
    sub = tmp_path / "job2"
    sub.mkdir()
    status, out, _ = nai("submit", str(sub), "--command", "sleep 30", "--json")
    assert status == 0 and json.loads(out)["state"] in ("queued", "running")
    status, out, err = nai("cancel", str(json.loads(out)["id"]), "--json")
    assert status == 0, err
    assert [j["state"] for j in json.loads(out)] in (["cancelled"], ["cancelling"])


@pytest.mark.parametrize("args", [
    ["logs", "1"], ["logs", "1", "-f"], ["up"], ["down"], ["demo"],
    ["server", "add", "lab", "ssh://a@b"], ["server", "rm", "lab"],
    ["server", "remove", "lab"], ["server", "default", "lab"], ["server", "trust", "lab"],
    ["server", "--json", "add", "lab", "ssh://a@b"],
    ["submit", ".", "--follow"], ["finetune", "m", "--dataset", "d", "--follow"],
    ["metrics", "1", "--csv"], ["completion", "bash"],
])
def test_json_where_it_means_nothing_is_a_usage_error(nai: Any, args: list[str]) -> None:
    status, out, err = nai(*args, *([] if "--json" in args else ["--json"]))
    assert status == contract.USAGE and out == ""
    assert "--json:" in err


def test_server_rm_is_server_remove(nai: Any) -> None:
    for verb in ("rm", "remove"):
        assert nai("server", "add", "lab", "ssh://alice@gpu1")[0] == 0
        assert "lab" in ClientConfig.load().servers
        status, _, err = nai("server", verb, "lab")
        assert status == 0, err
        assert "lab" not in ClientConfig.load().servers


def test_what_the_server_does_not_know_exits_3(nai: Any, client: ServerClient) -> None:
    for args in (["show", "9999"], ["logs", "9999"], ["metrics", "9999"],
                 ["dataset", "show", "nothing-here"], ["model", "pull", "nothing@2"],
                 ["cancel", "9999"]):
        status, out, err = nai(*args)
        assert status == contract.NOT_FOUND, (args, err)
        assert out == "" and err.startswith("nai: ")
    status, _, _ = nai("show", "abc")
    assert status == contract.USAGE


def test_exit_statuses_are_documented_in_help(nai: Any) -> None:
    status, out, _ = nai("--help")
    assert status == 0
    for line in ("0    ok", "2    a usage mistake", "3    not found", "4    not allowed",
                 "124  --follow", "130  interrupted", "the job's own exit code"):
        assert line in out


def test_errors_map_to_statuses() -> None:
    from nai_tui.remote import hostkeys

    assert contract.exit_status(NotFound("no job 3")) == 3
    assert contract.exit_status(Forbidden("not yours")) == 4
    assert contract.exit_status(hostkeys.HostKeyChanged("changed")) == 4
    assert contract.exit_status(hostkeys.LoginFailed("no key")) == 4
    assert contract.exit_status(hostkeys.UnknownHostKey(
        "unknown", host="h", keytype="ssh-ed25519", fingerprint="")) == 4
    assert contract.exit_status(NaiError("else")) == 1
