"""A refused request says what is wrong in words: the field, the value and the limit,
never a regex or pydantic's phrasing; the error's shape (400, code `invalid`) stays."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

NAME_RULE = ("use letters, digits, '.', '_' or '-', starting with a letter or digit, "
             "at most 64 characters")


def refused(api: TestClient, method: str, url: str, **kw: Any) -> str:
    response = api.request(method, url, **kw)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid" and set(error) <= {"code", "message", "details"}
    message = str(error["message"])
    for pydantic_words in ("should match", "Input should", "Field required",
                           "Extra inputs", "String should", "^["):
        assert pydantic_words not in message, message
    return message


@pytest.mark.parametrize(("method", "url", "body", "says"), [
    ("POST", "/v1/datasets", {"name": "bad name", "tree_id": "0" * 64},
     f"name 'bad name': {NAME_RULE}"),
    ("POST", "/v1/groups", {"name": "x" * 70}, f"name '{'x' * 70}': {NAME_RULE}"),
    ("PUT", "/v1/datasets/d/versions/1/tag", {"tag": "1st"},
     "tag '1st': use letters, digits, '.', '_' or '-', starting with a letter (a number "
     "names a version), at most 64 characters"),
    ("POST", "/v1/services", {"name": "s", "model": "a b"},
     "model 'a b': write NAME, NAME@VERSION or NAME@TAG, each part letters, digits"),
    ("GET", "/v1/services/-s", None, f"path.name '-s': {NAME_RULE}"),
    ("POST", "/v1/jobs", {"spec": {"command": "true"}, "source": "s" * 2000},
     "source: at most 1024 characters, got 2000"),
    ("PUT", "/v1/groups/admins/quota", {"max_gpus": -1}, "max_gpus: must be at least 0, got -1"),
    ("GET", "/v1/jobs?limit=-3", None, "query.limit: must be at least 1, got -3"),
    ("PUT", "/v1/groups/admins/quota", {"max_gpus": "two"},
     "max_gpus: must be a whole number, got 'two'"),
    ("POST", "/v1/groups", {}, "name: required, but missing"),
    ("POST", "/v1/groups", {"name": "ok", "colour": "red"},
     "colour: unknown field: check its spelling, or leave it out"),
])
def test_a_refused_field_is_said_in_words(api: TestClient, method: str, url: str,
                                          body: object, says: str) -> None:
    assert says in refused(api, method, url, json=body)


def test_a_body_that_is_not_json_says_so(api: TestClient) -> None:
    message = refused(api, "POST", "/v1/groups", content=b"{name: x}",
                      headers={"content-type": "application/json"})
    assert message.startswith("body: not valid JSON (") and "at character 1" in message


def test_a_model_name_with_a_trailing_newline_is_refused(api: TestClient) -> None:
    """`$` in a Python regex also matches before a final newline: the whole name is
    checked, so a model cannot be registered from a job as "lm\\n"."""
    message = refused(api, "POST", "/v1/models/lm%0A/from-job", json={"job": 1})
    assert message == f"model name 'lm\\n': {NAME_RULE}"
