"""Request bodies and values a client controls, in process (issue 13): bodies over a
route's cap are 413 before they are read, bad values are 400 naming the field, a
damaged store is 409 before a download starts, and nothing is ever a 500."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

from starlette.testclient import TestClient

from nai_server.api.limits import BULK_BODY_LIMIT, JSON_BODY_LIMIT, body_limit
from nai_server.app.use_cases import UseCases
from nai_server.testing import pack, tick_until


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def error(response) -> dict:
    return response.json()["error"]


def test_each_route_has_its_cap() -> None:
    assert body_limit("POST", "/v1/jobs") == JSON_BODY_LIMIT
    assert body_limit("PUT", "/v1/users/a/quota") == JSON_BODY_LIMIT
    assert body_limit("POST", "/v1/trees") == BULK_BODY_LIMIT
    assert body_limit("POST", "/v1/blobs/missing") == BULK_BODY_LIMIT
    assert body_limit("POST", f"/v1/trees/{'a' * 64}/archive") == BULK_BODY_LIMIT
    assert body_limit("POST", "/v1/blobs") is None  # streamed packs, bounded on their own


def test_a_body_over_the_cap_is_413_by_its_declared_length(api: TestClient) -> None:
    body = json.dumps({"spec": {"command": "x" * (JSON_BODY_LIMIT + 10)}}).encode()
    answer = api.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert error(answer)["code"] == "too_large"
    assert "1.0 MiB" in error(answer)["message"] and "POST /v1/jobs" in error(answer)["message"]


def test_a_chunked_body_is_counted_as_it_arrives(api: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"spec": {"command": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}}'

    answer = api.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413 and error(answer)["code"] == "too_large"


def test_a_tree_manifest_may_be_larger_than_ordinary_json(api: TestClient) -> None:
    entries = [{"path": f"f{i:06d}-{'p' * 100}", "size": 1, "sha256": "a" * 64}
               for i in range(10_000)]  # ~1.5 MB: refused only because the blob is absent
    answer = api.post("/v1/trees", json={"entries": entries})
    assert answer.status_code == 409 and "upload them first" in error(answer)["message"]


def test_bad_values_are_400_naming_the_field(api: TestClient) -> None:
    cases = [
        ("code_tree", b'{"spec": {"command": "x"}, "code_tree": "zz"}'),
        ("spec", b'{"spec": {"command": "x", "env": {"A": "\\ud800"}}}'),
        ("time_limit", b'{"spec": {"command": "x", "time_limit": "99999999999999999999d"}}'),
        ("after", b'{"spec": {"command": "x", "after": [18446744073709551616]}}'),
    ]
    for field, raw in cases:
        answer = api.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
        assert answer.status_code == 400, (field, answer.text)
        assert field in error(answer)["message"], (field, answer.text)
    digest = "b" * 64
    meta = api.post("/v1/datasets", json={"name": "d", "tree_id": digest,
                                          "metadata": {"n": 2**70}})
    assert meta.status_code == 400 and "metadata" in error(meta)["message"]
    nan = api.put("/v1/users/x/quota", content=b'{"gpu_hours": NaN}',
                  headers={"content-type": "application/json"})
    assert nan.status_code == 400 and "gpu_hours" in error(nan)["message"]


def test_lone_surrogates_are_400(api: TestClient) -> None:
    raw = b'{"entries": [{"path": "a\\ud800", "size": 1, "sha256": "' + b"a" * 64 + b'"}]}'
    answer = api.post("/v1/trees", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert "UTF-8" in error(answer)["message"]
    answer.content.decode("utf-8")  # the answer itself encodes
    raw = b'{"spec_yaml": "command: echo \\ud800"}'
    answer = api.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text


def test_unbounded_numbers_in_queries_and_paths_are_400(api: TestClient) -> None:
    big = 2**64
    for url in (f"/v1/jobs?offset={big}", f"/v1/jobs/{big}", f"/v1/jobs/1/logs?offset={big}",
                f"/v1/jobs/1/metrics?since={big}"):
        assert api.get(url).status_code == 400, url


def test_errors_quote_long_values_short(api: TestClient) -> None:
    answer = api.post("/v1/jobs", json={"spec": {"command": "x", "k" * 500_000: 1}})
    assert answer.status_code == 400 and len(answer.content) < 1000
    answer = api.post("/v1/jobs", json={"spec": {"command": "x"}, "k" * 500_000: 1})
    assert answer.status_code == 400 and len(answer.content) < 2000


def test_a_missing_blob_is_409_before_an_outputs_download_starts(
        api: TestClient, service: UseCases) -> None:
    job = api.post("/v1/jobs", json={"spec": {
        "command": 'echo hello > "$NAI_OUTPUT_DIR/out.txt"', "gpus": 0}}).json()["id"]
    tick_until(service, lambda: api.get(f"/v1/jobs/{job}").json()["state"] == "succeeded",
               what="the job to succeed")
    assert api.get(f"/v1/jobs/{job}/outputs/archive").status_code == 200
    service.blobs.path_of(sha(b"hello\n")).unlink()  # the store is damaged
    for url in (f"/v1/jobs/{job}/outputs/archive", f"/v1/jobs/{job}/outputs/file?path=out.txt"):
        answer = api.get(url)
        assert answer.status_code == 409, (url, answer.text)
        assert "ask the server's admin" in error(answer)["message"]


def test_a_missing_blob_is_409_for_a_tree_download(api: TestClient, service: UseCases) -> None:
    data = b"some bytes"
    assert api.post("/v1/blobs", content=pack({sha(data): data})).status_code == 201
    tree = api.post("/v1/trees", json={"entries": [
        {"path": "a", "size": len(data), "sha256": sha(data)}]}).json()["id"]
    service.blobs.path_of(sha(data)).unlink()
    answer = api.get(f"/v1/trees/{tree}/archive")
    assert answer.status_code == 409 and error(answer)["code"] == "conflict"
