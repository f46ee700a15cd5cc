"""Forward compatibility (issue 17, item 11): a server that adds a field to an answer
still serves older clients; an answer a client cannot read says which side to upgrade,
and `nai` prints that instead of a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from nai_server.protocol import API_VERSION, Me, Quota, UserCreate, VersionMismatch
from nai_tui.remote.client import ServerClient

ME = {"user": "ada", "uid": 1000, "admin": False, "groups": [], "mode": "personal"}
USER = {"name": "ada", "uid": 1000, "admin": False, "groups": [], "created_at": 1.0,
        "quota": {"max_gpus": 2, "gpu_hours": None, "period_days": 30}}


def _server(answers: dict[str, Any], api: str = API_VERSION
            ) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/version":
            return httpx.Response(200, json={"api_version": api, "server_version": "9.9",
                                             "mode": "personal", "added_later": True})
        return httpx.Response(200, json=answers[request.url.path])
    return handle


def _client(answers: dict[str, Any], api: str = API_VERSION) -> ServerClient:
    http = httpx.Client(transport=httpx.MockTransport(_server(answers, api)),
                        base_url="http://nai")
    return ServerClient(http, name="gpu1")


def test_a_reply_with_fields_this_client_does_not_know_is_read() -> None:
    user = {**USER, "shoe_size": 44, "quota": {**USER["quota"], "cpu_hours": 5}}
    client = _client({"/v1/me": {**ME, "new": {"nested": 1}}, "/v1/users": [user]})
    assert client.me().user == "ada"
    [read] = client.users()
    assert read.name == "ada" and read.quota == Quota(max_gpus=2)


def test_every_reply_is_read_through_the_same_door() -> None:
    """An answer without a field the client needs is a VersionMismatch, not a KeyError."""
    with pytest.raises(VersionMismatch, match="missing"):
        _client({"/v1/blobs/missing": {"absent": []}}).missing_blobs(["0" * 64])
    assert _client({"/v1/blobs/missing": {"missing": ["a"], "more": 1}}).missing_blobs(
        ["a"]) == ["a"]


def test_reply_models_ignore_unknown_fields_and_request_models_refuse_them() -> None:
    assert Me.model_validate({**ME, "added_later": 1}).user == "ada"
    with pytest.raises(ValueError, match="Extra inputs"):
        UserCreate.model_validate({"name": "ada", "nmae": "typo"})
    with pytest.raises(ValueError, match="Extra inputs"):
        Quota.model_validate({"max_gpu": 3})


def test_a_reply_missing_a_field_says_which_side_to_upgrade(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from nai_tui.remote import replies

    major = API_VERSION.split(".")[0]
    monkeypatch.setattr(replies, "API_VERSION", f"{major}.5")
    without_uid = {k: v for k, v in ME.items() if k != "uid"}
    answers = {f"{major}.4": "upgrade the server", f"{major}.6": "upgrade this client",
               f"{major}.5": "upgrade whichever of the two is older"}
    for api, hint in answers.items():
        with pytest.raises(VersionMismatch) as caught:
            _client({"/v1/me": without_uid}, api=api).me()
        message = str(caught.value)
        assert hint in message and "uid" in message and "gpu1" in message, message


def test_the_cli_prints_the_upgrade_hint_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from nai_tui import cli
    from nai_tui.cli import commands

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    broken = {**ME, "groups": "not a list"}
    monkeypatch.setattr(commands, "connect", lambda entry: _client({"/v1/me": broken}))
    assert cli.main(["whoami"]) == 1
    out = capsys.readouterr()
    assert "upgrade" in out.err and "Traceback" not in out.err and out.out == ""
