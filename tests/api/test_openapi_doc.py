"""The OpenAPI document says what the API does: its error statuses and body, the media
type of each stream, and, on a 405, every method the path serves (issue 13, item 9).
The fuzzing in test_openapi_fuzz.py checks the answers; these check the document."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.responses import StreamingResponse
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.api.openapi import STREAMED
from nai_server.app.use_cases import UseCases


@pytest.fixture
def doc(api: TestClient) -> dict[str, Any]:
    return api.get("/openapi.json").json()  # type: ignore[no-any-return]


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in doc["paths"].items()
            for method, op in ops.items()]


def test_errors_are_documented_with_their_body_and_never_as_422(doc: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    error = doc["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["error"]
    for method, path, op in _operations(doc):
        codes = set(op["responses"])
        assert "422" not in codes, (method, path)
        assert "400" in codes, (method, path)
        if method != "HEAD":
            assert op["responses"]["400"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"}
        if (method, path) != ("GET", "/v1/version"):
            assert {"401", "403"} <= codes, (method, path)
        if method in {"POST", "PUT", "DELETE"} and path not in (
                "/v1/blobs/missing", "/v1/trees/{tree_id}/archive"):
            assert {"409", "503"} <= codes, (method, path)
        if "{" in path:
            assert "404" in codes, (method, path)


def test_the_body_cap_and_its_exception_are_documented(doc: dict[str, Any]) -> None:
    assert "413" in doc["paths"]["/v1/jobs"]["post"]["responses"]
    upload = doc["paths"]["/v1/blobs"]["post"]
    assert "413" not in upload["responses"]
    assert list(upload["requestBody"]["content"]) == ["application/x-tar"]


def test_streams_and_head_declare_what_they_send(doc: dict[str, Any]) -> None:
    for (method, path), media in STREAMED.items():
        assert list(doc["paths"][path][method.lower()]["responses"]["200"]["content"]) == [media]
    head = doc["paths"]["/v1/trees/{tree_id}"]["head"]["responses"]
    assert all("content" not in answer for answer in head.values())


def test_a_stream_without_a_declared_media_type_fails_the_document(service: UseCases) -> None:
    app = create_app(service)

    @app.get("/v1/undeclared")
    def undeclared() -> StreamingResponse:
        return StreamingResponse(iter([b""]))

    with pytest.raises(RuntimeError, match="STREAMED"):
        app.openapi()


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/v1/jobs/1", "DELETE, GET"),
    ("PATCH", "/v1/datasets/d/versions/1", "DELETE, GET"),
    ("DELETE", "/v1/trees/" + "0" * 64 + "/archive", "GET, POST"),
])
def test_a_wrong_method_is_answered_with_every_method_of_the_path(
        api: TestClient, method: str, path: str, allowed: str) -> None:
    response = api.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_job_list_filters_are_in_the_document(api: TestClient, doc: dict[str, Any]) -> None:
    params = {p["name"]: p["schema"] for p in doc["paths"]["/v1/jobs"]["get"]["parameters"]}
    assert params["scope"]["enum"] == ["all", "mine"]
    response = api.get("/v1/jobs", params={"state": "sleeping"})
    assert response.status_code == 400 and "state" in response.json()["error"]["message"]
