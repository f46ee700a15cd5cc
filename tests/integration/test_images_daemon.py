"""The first-party processors through the real daemon as a real non-root user: `images`
turns a dataset of photos into small WebP files without their metadata (an unreadable
photo skipped and named in the job's report), then `split` stratifies that version
by class folder; `nai dataset show` names each version's lineage, and the input
versions are untouched (their content-addressed trees unchanged)."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]
from PIL import Image
from plug_support import nai_as  # type: ignore[import-not-found]
from test_registry_access import Actor, upload_tree  # type: ignore[import-not-found]

from nai_server.protocol import TERMINAL_STATES
from nai_server.testing.plugin_dist import write_dist

pytestmark = [needs_root]


def photo(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # the camera's make: it must not survive
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG", exif=exif)
    return out.getvalue()


DATA = {**{f"cat/{i}.jpg": photo((40, 30), (200, 10 * i, 10)) for i in range(4)},
        **{f"dog/{i}.jpg": photo((30, 40), (10, 10 * i, 200)) for i in range(2)},
        "dog/torn.jpg": b"\xff\xd8\xff not a whole photo", "README": b"six photos\n"}


def test_images_then_split_through_the_daemon(daemon_factory, make_user,
                                               request: pytest.FixtureRequest,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    site = write_dist(Path(tempfile.mkdtemp(prefix="nai-site-")), "nai-plugin-images",
                      "0.1.0", {}, {"nai.dataset_processors": {
                          "images2": "nai_plugins.images", "split2": "nai_plugins.split"}})
    request.addfinalizer(lambda: shutil.rmtree(site, ignore_errors=True))
    monkeypatch.setenv("PYTHONPATH", f"{site}:{os.environ.get('PYTHONPATH', '')}")
    daemon: Daemon = daemon_factory(plugins={"images2": {}, "split2": {}})
    daemon.start()
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    sender = Actor(daemon, alice)
    tree = upload_tree(daemon, DATA, sender)
    sender.http.close()
    assert daemon.as_user(alice, "POST", "/v1/datasets",
                          {"name": "photos", "tree_id": tree}).status == 201

    def run(plugin: str, source: str, **body) -> dict:
        made = daemon.as_user(alice, "POST", f"/v1/datasets/{source}/process",
                              {"plugin": plugin, **body})
        assert made.status == 201, made.body
        job_id = made.json()["id"]

        def done() -> dict | None:
            info = daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}").json()
            return info if info["state"] in TERMINAL_STATES else None
        info = wait_for(done, timeout=90, what=f"job {job_id} to end")
        log = daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}/logs").body.decode()
        assert info["state"] == "succeeded", log
        return {**info, "log": log}

    small = run("images2", "photos", to="small",
                options={"size": "16", "format": "webp", "quality": "80"})
    assert small["registered"] == "small@1"
    assert '"converted": 6' in small["log"] and '"skipped": 1' in small["log"]
    assert '"path": "dog/torn.jpg"' in small["log"]  # named in the report
    got = daemon.as_user(alice, "GET",
                         f"/v1/jobs/{small['id']}/outputs/file?path=cat/0.webp")
    with Image.open(io.BytesIO(got.body)) as made:
        assert made.format == "WEBP" and made.size == (16, 12)
        assert 0x010F not in made.getexif()
    files = daemon.as_user(alice, "GET", "/v1/datasets/small").json()["versions"][0]["files"]
    assert files == 7  # six photos and the README, the torn one left out

    parts = run("split2", "small", version="1",
                options={"ratios": "1,1", "names": "a,b", "stratify": "folder"})
    assert parts["registered"] == "small@2"
    assert '"files": {"a": 4, "b": 3}' in parts["log"]  # 2+1 photos, and the README
    assert '"stratify": "folder"' in parts["log"]

    shown = nai_as(alice, "dataset", "show", "small@1", socket=daemon.socket)
    assert shown.returncode == 0, shown.stderr
    assert "from:     photos@1 by images2 0.1.0" in shown.stdout, shown.stdout
    shown = nai_as(alice, "dataset", "show", "small@2", socket=daemon.socket)
    assert f"from:     small@1 by split2 0.1.0 (names=a,b, ratios=1,1, stratify=folder) " \
           f"in job {parts['id']}" in shown.stdout, shown.stdout
    # The inputs are untouched: the same content-addressed trees as before.
    photos = daemon.as_user(alice, "GET", "/v1/datasets/photos").json()["versions"]
    assert [v["tree_id"] for v in photos] == [tree]
    versions = daemon.as_user(alice, "GET", "/v1/datasets/small").json()["versions"]
    assert versions[0]["tree_id"] == small["output_tree"]
