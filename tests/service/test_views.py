"""Views: a user's dataset version laid out once, shared by all their jobs (a symlink
each), read-only, and removed once no job has used it for a while; in process, with
real job processes and real files."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

from starlette.testclient import TestClient

from nai_server.app.use_cases import UseCases
from nai_server.host import views as views_module
from nai_server.host.views import Views
from nai_server.testing import tick_until, upload_tree

END = {"succeeded", "failed", "cancelled", "timed_out", "lost"}
DATA = {"train/a.txt": b"alpha", "train/b.txt": b"beta", "labels.csv": b"id,label\n"}


def run(api: TestClient, service: UseCases, command: str, dataset: str) -> dict:
    made = api.post("/v1/jobs", json={"spec": {"gpus": 0, "command": command,
                                               "dataset": dataset}})
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    tick_until(service, lambda: api.get(f"/v1/jobs/{job_id}").json()["state"] in END,
               what=f"job {job_id} to end")
    return dict(api.get(f"/v1/jobs/{job_id}").json())


def test_jobs_on_one_version_share_one_read_only_view(api: TestClient,
                                                      service: UseCases) -> None:
    tree = upload_tree(api, DATA)
    assert api.post("/v1/datasets", json={"name": "d", "tree_id": tree}).status_code == 201
    read = 'cat "$NAI_DATASET_DIR/train/a.txt" > "$NAI_OUTPUT_DIR/got"'
    first, second = (run(api, service, read, "d") for _ in range(2))
    assert first["state"] == second["state"] == "succeeded", (first, second)

    mounts = [service.runtime.job_dir(j["id"]) / "dataset" for j in (first, second)]
    assert all(m.is_symlink() for m in mounts)
    assert os.readlink(mounts[0]) == os.readlink(mounts[1])  # one view, built once
    view = Path(os.readlink(mounts[0]))
    assert view.parent.parent == service.runtime.starter.views.root
    assert view.name.startswith(f"{tree}.") and len(view.name) > len(tree) + 16  # a token
    for path, data in DATA.items():  # links to the read-only blobs, nothing copied
        st = (view / path).stat()
        blob = service.blobs.path_of(hashlib.sha256(data).hexdigest()).stat()
        assert (st.st_ino, stat.S_IMODE(st.st_mode)) == (blob.st_ino, 0o444)
    for d in (view, view / "train"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o555
    got = api.get(f"/v1/jobs/{second['id']}/outputs/file", params={"path": "got"})
    assert got.text == "alpha"


def test_a_job_that_changes_its_view_changes_no_other_jobs(api: TestClient,
                                                          service: UseCases) -> None:
    """A personal server's job runs as the view's owner: what it changes in the view
    (chmod, then add, remove or move entries) the next job does not see."""
    assert api.post("/v1/datasets", json={"name": "d", "tree_id": upload_tree(
        api, DATA)}).status_code == 201
    attempts = ('cd "$NAI_DATASET_DIR"; for t in "rm labels.csv" "mkdir new" "mv train t2" '
                '"chmod u+w . train"; do '
                'if sh -c "$t" 2>/dev/null; then echo "done: $t"; fi; done '
                '> "$NAI_OUTPUT_DIR/done"; chmod -R u+w . 2>/dev/null; mv train t3; '
                'rm -f labels.csv; true')
    job = run(api, service, attempts, "d")
    done = api.get(f"/v1/jobs/{job['id']}/outputs/file", params={"path": "done"}).text
    if os.geteuid() != 0:  # the view's folders are read-only (root bypasses that)
        assert done == "", done
    # Whatever it managed (its owner's own user, here, may chmod; root may move), the
    # next job reads the version as it is: a changed view is made anew.
    again = run(api, service, 'cat "$NAI_DATASET_DIR/train/a.txt" > "$NAI_OUTPUT_DIR/got"',
                "d")
    got = api.get(f"/v1/jobs/{again['id']}/outputs/file", params={"path": "got"})
    assert got.text == "alpha", again


def test_sweep_removes_views_unused_for_a_while_never_one_in_use(tmp_path: Path,
                                                                 service: UseCases,
                                                                 api: TestClient) -> None:
    trees = [upload_tree(api, {f"f{i}.txt": str(i).encode()}) for i in range(4)]
    views = Views(tmp_path / "views", service.blobs, personal=True)
    made = [views.view("ann", t) for t in trees]
    other = views.view("bob", trees[0])
    assert other != made[0]  # a view per user
    now = time.time()
    old = now - views_module.KEEP_SECONDS - 10
    for path in (made[0], made[1], other):
        os.utime(views_module._use_file(path), (old, old))  # last used long ago
    leftover = made[0].parent / f".{trees[3]}.cut.new"
    leftover.mkdir()
    os.utime(leftover, (now - 7200, now - 7200))

    removed = views.sweep(in_use={("ann", trees[1])}, now=now)
    assert removed == 3  # ann's first, bob's, and the cut-short build
    assert not made[0].exists() and not other.exists() and not leftover.exists()
    assert made[1].exists()  # old, but a running job uses it
    assert made[2].exists() and made[3].exists()  # used lately
    assert views.view("ann", trees[0]) != made[0]  # built again when asked for


def test_sweep_keeps_a_users_most_recent_views_only(tmp_path: Path, service: UseCases,
                                                    api: TestClient,
                                                    monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(views_module, "KEEP_PER_USER", 2)
    trees = [upload_tree(api, {f"g{i}.txt": str(i).encode()}) for i in range(3)]
    views = Views(tmp_path / "views", service.blobs, personal=True)
    made = []
    for i, tree in enumerate(trees):
        made.append(views.view("ann", tree))
        os.utime(views_module._use_file(made[-1]), (1000.0 + i, 1000.0 + i))
    assert views.sweep(in_use=(), now=1010.0) == 1
    assert [p.exists() for p in made] == [False, True, True]  # the least recently used
    assert views.view("ann", trees[1]) == made[1]  # the others are found again


def test_a_trees_folders_are_read_from_its_manifest_once(tmp_path: Path, monkeypatch,
                                                         service: UseCases,
                                                         api: TestClient) -> None:
    """Each start checks its view's folders; a tree never changes, so its manifest is
    walked once (a million-file dataset's walk took about 0.2 s a start), and at most
    TREES_KEPT trees' folder lists are kept."""
    tree = upload_tree(api, DATA)
    read = []
    blobs = service.blobs
    real = blobs.get_tree

    def counted(tree_id: str):
        read.append(tree_id)
        return real(tree_id)

    monkeypatch.setattr(blobs, "get_tree", counted)
    views = Views(tmp_path / "views", blobs, personal=True)
    first = views.view("me", tree)
    built = len(read)  # laying it out reads the manifest too
    assert views.view("me", tree) == first and views.view("me", tree) == first
    assert len(read) == built  # found intact twice, its folders known: no walk
    assert (first / "train").is_dir()
    monkeypatch.setattr(views_module, "TREES_KEPT", 1)
    other = upload_tree(api, {"x/y.txt": b"y"})
    views.view("me", other)
    assert list(views._dirs) == [other]
