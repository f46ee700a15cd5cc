"""Blobs and trees through the API: packed upload, verification, path safety, resume."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import AsyncIterator

import httpx
from starlette.testclient import TestClient

from nai_server.api.app import create_app
from nai_server.app.use_cases import UseCases
from nai_server.testing import AsPeer, pack, upload_tree


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(path: str, data: bytes, mode: int = 0o644) -> dict:
    return {"path": path, "size": len(data), "mode": mode, "sha256": sha(data)}


FILES = {"train.py": b"print('hi')\n", "data/a.bin": b"\x00" * 5000, "data/b.txt": b"b" * 10}


def test_upload_then_tree_then_download_is_byte_identical(api: TestClient) -> None:
    digests = [sha(d) for d in FILES.values()]
    assert api.post("/v1/blobs/missing", json={"digests": digests}).json()["missing"] == digests
    up = api.post("/v1/blobs", content=pack({sha(d): d for d in FILES.values()}))
    assert up.status_code == 201 and up.json()["stored"] == 3
    assert api.post("/v1/blobs/missing", json={"digests": digests}).json()["missing"] == []

    entries = [entry(p, d) for p, d in FILES.items()]
    entries.append({"path": "link", "kind": "symlink", "target": "data/b.txt"})
    tree = api.post("/v1/trees", json={"entries": entries})
    assert tree.status_code == 201, tree.text
    tree_id = tree.json()["id"]
    assert tree.headers["location"] == f"/v1/trees/{tree_id}"
    assert api.get(f"/v1/trees/{tree_id}").json()["files"] == 3

    got = api.get(f"/v1/trees/{tree_id}/archive")
    with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
        contents = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
    assert contents == FILES and links == {"link": "data/b.txt"}

    part = api.get(f"/v1/trees/{tree_id}/archive", params={"path": "data"})
    with tarfile.open(fileobj=io.BytesIO(part.content)) as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == ["data/a.bin",
                                                                          "data/b.txt"]
    assert api.get(f"/v1/trees/{tree_id}/archive", params={"path": "nope"}).status_code == 404
    some = api.post(f"/v1/trees/{tree_id}/archive", json={"paths": ["train.py", "link"]})
    with tarfile.open(fileobj=io.BytesIO(some.content)) as tar:
        assert sorted(m.name for m in tar.getmembers()) == ["link", "train.py"]
    unknown = api.post(f"/v1/trees/{tree_id}/archive", json={"paths": ["zzz"]})
    assert unknown.status_code == 404 and "zzz" in unknown.json()["error"]["message"]
    assert api.get(f"/v1/trees/{'0' * 64}").status_code == 404


def test_corrupt_digest_is_refused_and_not_stored(api: TestClient) -> None:
    good, bad = b"good data", b"tampered"
    response = api.post("/v1/blobs", content=pack({sha(good): good, sha(b"orig"): bad}))
    assert response.status_code == 400
    assert sha(b"orig")[:12] in response.json()["error"]["message"]
    missing = api.post("/v1/blobs/missing", json={"digests": [sha(good), sha(b"orig")]})
    assert missing.json()["missing"] == [sha(b"orig")]  # the verified one was kept


def test_tree_with_missing_blobs_is_refused_with_the_list(api: TestClient) -> None:
    response = api.post("/v1/trees", json={"entries": [entry("x.py", b"never sent")]})
    assert response.status_code == 409
    assert response.json()["error"]["details"]["missing"] == [sha(b"never sent")]


def test_unsafe_paths_are_400s_that_name_the_path(api: TestClient) -> None:
    data = b"x"
    api.post("/v1/blobs", content=pack({sha(data): data}))
    cases = {
        "/etc/passwd": "/etc/passwd",
        "../up.txt": "../up.txt",
        "a/../../b": "a/../../b",
    }
    for path, named in cases.items():
        response = api.post("/v1/trees", json={"entries": [entry(path, data)]})
        assert response.status_code == 400, path
        assert named in response.json()["error"]["message"]
    escape = api.post("/v1/trees", json={"entries": [
        {"path": "evil", "kind": "symlink", "target": "../../etc/shadow"}]})
    assert escape.status_code == 400 and "evil" in escape.json()["error"]["message"]
    device = api.post("/v1/trees", json={"entries": [
        {"path": "dev", "size": 0, "mode": 0o020644, "sha256": sha(b"")}]})
    assert device.status_code == 400 and "dev" in device.json()["error"]["message"]
    # A file's size is required, not taken as 0; a misspelt field is refused.
    sizeless = api.post("/v1/trees", json={"entries": [{"path": "n.txt", "sha256": sha(data)}]})
    assert sizeless.status_code == 400
    assert "n.txt: size must be an integer from 0 to" in sizeless.json()["error"]["message"]
    typo = api.post("/v1/trees", json={"entries": [{**entry("t.txt", data), "szie": 1}]})
    assert typo.status_code == 400 and "szie" in typo.text
    bad_digest = api.post("/v1/blobs/missing", json={"digests": ["zz"]})
    assert bad_digest.status_code == 400


def test_oversize_and_too_many_entries(tmp_path) -> None:
    from nai_server.api import create_app
    from nai_server.testing import AsPeer, make_service

    service = make_service(tmp_path / "s", limits={"max_file_size": 100, "max_tree_entries": 2})
    api = TestClient(AsPeer(create_app(service)), base_url="http://nai")
    big = b"y" * 101
    assert api.post("/v1/blobs", content=pack({sha(big): big})).status_code == 400
    many = [entry(f"f{i}", b"z") for i in range(3)]
    response = api.post("/v1/trees", json={"entries": many})
    assert response.status_code == 400 and "entries" in response.json()["error"]["message"]
    huge = api.post("/v1/trees", json={"entries": [
        {"path": "w.bin", "size": 10**6, "mode": 0o644, "sha256": sha(b"z")}]})
    assert huge.status_code == 400 and "w.bin" in huge.json()["error"]["message"]
    service.close()


def test_truncated_upload_keeps_complete_blobs_and_resume_sends_the_rest(
        api: TestClient) -> None:
    blobs = {sha(d): d for d in (b"one" * 1000, b"two" * 1000, b"three" * 1000)}
    stream = pack(blobs)
    cut = stream[: len(stream) // 2]
    response = api.post("/v1/blobs", content=cut)
    assert response.status_code == 400 and "send the rest again" in response.json()["error"][
        "message"]
    missing = api.post("/v1/blobs/missing", json={"digests": list(blobs)}).json()["missing"]
    assert 0 < len(missing) < 3
    entries = [entry(f"f{i}", d) for i, d in enumerate(blobs.values())]
    assert api.post("/v1/trees", json={"entries": entries}).status_code == 409
    retry = api.post("/v1/blobs", content=pack({d: blobs[d] for d in missing}))
    assert retry.json()["stored"] == len(missing)
    assert api.post("/v1/trees", json={"entries": entries}).status_code == 201



async def test_a_streamed_upload_with_a_bad_blob_keeps_the_good_ones(service: UseCases) -> None:
    # Several MiB in 64 KiB pieces (httpx's ASGI transport streams them, as a socket
    # does): batches are hashed and written while the next ones arrive, and a bad blob
    # in a later batch still fails the upload cleanly, keeping the completed blobs.
    good = [bytes([i]) * (3 << 20) for i in range(2)]
    bad = b"not what was promised" * 1000
    stream = pack({**{sha(d): d for d in good}, sha(b"promised"): bad})

    async def pieces(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    transport = httpx.ASGITransport(app=AsPeer(create_app(service)))
    async with httpx.AsyncClient(transport=transport, base_url="http://nai") as api:
        response = await api.post("/v1/blobs", content=pieces(stream))
        assert response.status_code == 400 and sha(b"promised")[:12] in response.text
        digests = [sha(d) for d in good] + [sha(b"promised")]
        missing = await api.post("/v1/blobs/missing", json={"digests": digests})
        assert missing.json()["missing"] == [sha(b"promised")]
        again = await api.post("/v1/blobs", content=pieces(pack({sha(bad): bad})))
        assert again.status_code == 201
    assert list((service.blobs.root / "tmp").iterdir()) == []


def test_a_tree_that_lost_a_blob_is_not_held_and_its_download_names_the_files(
        api: TestClient, service: UseCases) -> None:
    """A blob deleted from the store (a disk fault, an admin's mistake): the server
    neither claims the tree (HEAD 404, so a client sends it again) nor answers its
    download with a bare error; the 409 names the files that are gone."""
    tree_id = upload_files(api, FILES)
    assert api.head(f"/v1/trees/{tree_id}").status_code == 200
    service.blobs.path_of(sha(FILES["data/b.txt"])).unlink()
    assert api.head(f"/v1/trees/{tree_id}").status_code == 404
    lost = sha(FILES["data/b.txt"])
    assert api.post("/v1/blobs/missing", json={"digests": [lost]}).json()["missing"] == [lost]
    for answer in (api.get(f"/v1/trees/{tree_id}/archive"),
                   api.post(f"/v1/trees/{tree_id}/archive", json={"paths": ["data/b.txt"]})):
        assert answer.status_code == 409, answer.text
        error = answer.json()["error"]
        assert "'data/b.txt'" in error["message"] and "nai-admin store verify" in error["message"]
        assert error["details"]["missing_files"] == ["data/b.txt"]
    assert api.post(f"/v1/trees/{tree_id}/archive", json={"paths": ["train.py"]}).status_code == 200
    # Sending the bytes again restores the tree.
    assert api.post("/v1/blobs", content=pack({lost: FILES["data/b.txt"]})).status_code == 201
    assert api.head(f"/v1/trees/{tree_id}").status_code == 200


def upload_files(api: TestClient, files: dict[str, bytes]) -> str:
    assert api.post("/v1/blobs", content=pack({sha(d): d for d in files.values()})
                    ).status_code == 201
    tree = api.post("/v1/trees", json={"entries": [entry(p, d) for p, d in files.items()]})
    assert tree.status_code == 201, tree.text
    return str(tree.json()["id"])


def test_one_file_of_a_tree_from_a_byte_on(api: TestClient) -> None:
    """A client resumes a download cut off mid-file with `Range: bytes=N-`."""
    data = bytes(range(256)) * 40
    tree_id = upload_tree(api, {"big.bin": data, "empty": b""})
    url = f"/v1/trees/{tree_id}/file"
    whole = api.get(url, params={"path": "big.bin"})
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    rest = api.get(url, params={"path": "big.bin"}, headers={"Range": "bytes=1000-"})
    assert rest.status_code == 206 and rest.content == data[1000:]
    assert rest.headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    assert rest.headers["content-length"] == str(len(data) - 1000)
    for ignored in ("bytes=0-", "bytes=5-9", "bytes=-5", "items=3-", "bytes=x-"):
        answer = api.get(url, params={"path": "big.bin"}, headers={"Range": ignored})
        assert (answer.status_code, answer.content) == (200, data), ignored
    past = api.get(url, params={"path": "big.bin"}, headers={"Range": f"bytes={len(data)}-"})
    assert past.status_code == 400 and "past its end" in past.json()["error"]["message"]
    assert api.get(url, params={"path": "empty"}).content == b""
    missing = api.get(url, params={"path": "nope"})
    assert missing.status_code == 404 and "no file 'nope'" in missing.json()["error"]["message"]
