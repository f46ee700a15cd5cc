"""A job's code is hard links to the store's blobs (code_snapshot): a real non-root
user's job, under the real multi-user daemon, can add files to its code and replace or
delete those it was given, but cannot change one in place, nor chmod it, nor so change
the blob that other jobs and versions share. `code: writable` gives a private copy."""

from __future__ import annotations

import hashlib
import stat

from tests.integration.conftest import Daemon, UnixUser, needs_root, upload_as, wait_for

pytestmark = [needs_root]

CODE = {"train.py": b"print('train')\n", "lib/conf.yaml": b"lr: 0.1\n",
        "keep.txt": b"keep me\n"}
# Each attempt prints what it tried and whether the kernel let it (in code/, the cwd).
ATTEMPTS = """
attempt() { if sh -c "$2" 2>/dev/null; then echo "$1 allowed"; else echo "$1 refused"; fi; }
attempt append 'echo x >> train.py'
attempt truncate ': > lib/conf.yaml'
attempt chmod 'chmod u+w train.py'
attempt python-write 'python3 -c "open(\\"keep.txt\\", \\"w\\").write(\\"x\\")"'
attempt touch 'touch -m -d 2000-01-01 keep.txt'
attempt create 'echo new > new.txt'
attempt mkdir 'mkdir -p more/deeper'
attempt replace 'echo mine > tmp && mv tmp lib/conf.yaml'
attempt delete 'rm keep.txt'
"""
LINKED = {"append": "refused", "truncate": "refused", "chmod": "refused",
          "python-write": "refused", "touch": "refused", "create": "allowed",
          "mkdir": "allowed", "replace": "allowed", "delete": "allowed"}


def _upload(daemon: Daemon, user: UnixUser) -> str:
    """The code's blobs and tree, sent by `user` (so that they may run it)."""
    return upload_as(daemon, user, CODE)


def _run(daemon: Daemon, user, tree: str, **spec: object) -> tuple[dict, str]:
    job = daemon.as_user(user, "POST", "/v1/jobs", {
        "spec": {"command": ATTEMPTS, "gpus": 0, **spec}, "code_tree": tree})
    assert job.status == 201, job.json()
    job_id = job.json()["id"]
    with daemon.client() as root:
        def ended() -> dict | None:
            info = root.get(f"/v1/jobs/{job_id}").json()
            return info if info["state"] in ("succeeded", "failed", "lost") else None

        info = wait_for(ended, what="the job to end")
        log = root.get(f"/v1/jobs/{job_id}/logs").text
    assert info["state"] == "succeeded", (info, log, daemon.log())
    words = log.split()
    return info, dict(zip(words[0::2], words[1::2], strict=False))


def _blobs_intact(daemon: Daemon) -> None:
    for data in CODE.values():
        digest = hashlib.sha256(data).hexdigest()
        blob = daemon.state / "blobs" / "sha256" / digest[:2] / digest[2:]
        st = blob.stat()
        assert blob.read_bytes() == data
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o444)


def test_a_job_cannot_change_the_blobs_behind_its_code(daemon: Daemon, make_user) -> None:
    user = make_user()
    assert daemon.admin("user", "add", user.name).returncode == 0
    tree = _upload(daemon, user)

    info, results = _run(daemon, user, tree)
    assert results == LINKED
    _blobs_intact(daemon)
    code = daemon.state / "jobs" / str(info["id"]) / "code"
    # The files it was given are the blobs themselves (nothing copied)...
    digest = hashlib.sha256(CODE["train.py"]).hexdigest()
    blob = daemon.state / "blobs" / "sha256" / digest[:2] / digest[2:]
    assert (code / "train.py").stat().st_ino == blob.stat().st_ino
    # ...in directories that are the job's.
    for d in (code, code / "lib"):
        assert d.stat().st_uid == user.uid
    assert (code / "lib" / "conf.yaml").read_text() == "mine\n"

    # A second job of the same code gets the same read-only links.
    _, again = _run(daemon, user, tree)
    assert again == LINKED
    _blobs_intact(daemon)


def test_code_writable_is_a_private_copy(daemon: Daemon, make_user) -> None:
    user = make_user()
    assert daemon.admin("user", "add", user.name).returncode == 0
    tree = _upload(daemon, user)
    info, results = _run(daemon, user, tree, code="writable")
    assert results == dict.fromkeys(LINKED, "allowed")
    code = daemon.state / "jobs" / str(info["id"]) / "code"
    assert (code / "train.py").read_bytes() == CODE["train.py"] + b"x\n"
    assert (code / "train.py").stat().st_uid == user.uid
    _blobs_intact(daemon)
