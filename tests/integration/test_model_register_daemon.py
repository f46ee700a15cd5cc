"""`POST /v1/models/{name}/from-job` (`nai model register JOB`) through the real daemon,
as real unix users: who may register a job's outputs, into which model, what part of
the outputs, and the lineage and metric summary the version keeps."""

from __future__ import annotations

from typing import Any

from conftest import Daemon, needs_root, wait_for  # type: ignore[import-not-found]
from test_registry_access import Actor, upload_tree  # type: ignore[import-not-found]

pytestmark = [needs_root]

# Checkpoints under ckpt/, a log beside them, and metrics whose best is not their last.
TRAIN = """
mkdir -p "$NAI_OUTPUT_DIR/ckpt/best"
printf weights > "$NAI_OUTPUT_DIR/ckpt/best/w.bin"
printf notes > "$NAI_OUTPUT_DIR/train.log"
ln -s ../train.log "$NAI_OUTPUT_DIR/ckpt/log"
for row in '"step": 1, "loss": 1.0, "accuracy": 0.5, "val_ppl": 30' \\
           '"step": 2, "loss": 0.5, "accuracy": 0.9, "val_ppl": 20' \\
           '"step": 3, "loss": 0.7, "accuracy": 0.8, "val_ppl": 25'; do
  echo "{$row}" >> "$NAI_METRICS_FILE"
done
"""


def _ended(daemon: Daemon, job_id: int) -> dict[str, Any]:
    with daemon.client() as root:
        def ended() -> dict[str, Any] | None:
            info = root.get(f"/v1/jobs/{job_id}").json()
            return info if info["state"] in ("succeeded", "failed", "lost") else None

        info = wait_for(ended, what=f"job {job_id} to end")
        assert info["state"] == "succeeded", (info, root.get(f"/v1/jobs/{job_id}/logs").text)
        return info


def _files(daemon: Daemon, tree_id: str) -> set[str]:
    with daemon.client() as root:
        return {e["path"] for e in root.get(f"/v1/trees/{tree_id}").json()["entries"]}


def test_register_a_jobs_outputs_as_a_model(daemon: Daemon, make_user) -> None:
    owner, member, other = make_user(), make_user(), make_user()
    for u in (owner, member, other):
        assert daemon.admin("user", "add", u.name).returncode == 0
    assert daemon.admin("group", "add", "lab").returncode == 0
    for u in (owner, member):
        assert daemon.admin("group", "add-member", "lab", u.name).returncode == 0
    sent = daemon.as_user(owner, "POST", "/v1/jobs", {"spec": {
        "command": TRAIN, "gpus": 0, "group": "lab", "name": "train"}})
    assert sent.status == 201, sent.json()
    job_id = sent.json()["id"]
    info = _ended(daemon, job_id)

    # Someone who may not read the job's outputs registers nothing, under any name.
    refused = daemon.as_user(other, "POST", "/v1/models/stolen/from-job", {"job": job_id})
    assert refused.status == 403, refused.json()
    assert "only they, their group" in refused.json()["error"]["message"]
    with daemon.client() as root:
        assert root.get("/v1/models/stolen").status_code == 404

    # A member of the job's group may: a folder of the outputs becomes the version's top.
    made = daemon.as_user(member, "POST", "/v1/models/net/from-job",
                          {"job": job_id, "path": "ckpt/best", "tag": "best"})
    assert made.status == 201, made.json()
    v = made.json()
    assert (v["version"], v["tag"], v["files"], v["created_by"]) == (1, "best", 1, member.name)
    assert _files(daemon, v["tree_id"]) == {"w.bin"}
    meta = v["metadata"]
    assert meta["lineage"] == {"job": job_id, "code_tree": info["code_tree"],
                               "datasets": [], "models": []}
    assert meta["source"] == {"job": job_id, "path": "ckpt/best", "state": "succeeded"}
    summary = meta["summary"]
    # Best by direction: lower for a loss and a perplexity, higher for accuracy.
    assert (summary["loss"]["best"], summary["loss"]["best_step"]) == (0.5, 2)
    assert (summary["loss"]["last"], summary["loss"]["last_step"]) == (0.7, 3)
    assert (summary["accuracy"]["best"], summary["accuracy"]["direction"]) == (0.9, "max")
    assert (summary["val_ppl"]["best"], summary["val_ppl"]["direction"]) == (20, "min")
    assert "step" not in summary and summary["loss"]["count"] == 3
    assert meta["metrics"] == {"step": 3, "loss": 0.7, "accuracy": 0.8, "val_ppl": 25}

    # The whole outputs, a direction given for the chosen metric; and the model is the
    # member's to write, not the job owner's.
    again = daemon.as_user(member, "POST", "/v1/models/net/from-job",
                           {"job": job_id, "metric": "val_ppl", "direction": "max"})
    assert again.status == 201, again.json()
    assert _files(daemon, again.json()["tree_id"]) == {"ckpt/best/w.bin", "ckpt/log",
                                                       "train.log"}
    chosen = again.json()["metadata"]["metric"]
    assert (chosen["name"], chosen["best"], chosen["direction"]) == ("val_ppl", 30, "max")
    not_theirs = daemon.as_user(owner, "POST", "/v1/models/net/from-job", {"job": job_id})
    assert not_theirs.status == 404, not_theirs.json()  # private to the member
    with daemon.client() as root:
        assert [x["version"] for x in root.get("/v1/models/net").json()["versions"]] == [1, 2]


def test_a_model_one_may_read_but_not_write_is_refused(daemon: Daemon, make_user) -> None:
    owner, other = make_user(), make_user()
    for u in (owner, other):
        assert daemon.admin("user", "add", u.name).returncode == 0
    theirs = Actor(daemon, other)
    tree = upload_tree(daemon, {"w.bin": b"theirs"}, theirs)
    theirs.http.close()
    created = daemon.as_user(other, "POST", "/v1/models",
                             {"name": "shared-net", "tree_id": tree, "shared": True})
    assert created.status == 201, created.json()
    sent = daemon.as_user(owner, "POST", "/v1/jobs", {"spec": {"command": TRAIN, "gpus": 0}})
    job_id = sent.json()["id"]
    _ended(daemon, job_id)

    refused = daemon.as_user(owner, "POST", "/v1/models/shared-net/from-job", {"job": job_id})
    assert refused.status == 403, refused.json()
    assert other.name in refused.json()["error"]["message"]
    with daemon.client() as root:
        assert len(root.get("/v1/models/shared-net").json()["versions"]) == 1

    # Nothing at the path: the answer lists what the outputs hold.
    nothing = daemon.as_user(owner, "POST", "/v1/models/mine/from-job",
                             {"job": job_id, "path": "checkpoints"})
    assert nothing.status == 400
    assert "ckpt, train.log" in nothing.json()["error"]["message"]
    escape = daemon.as_user(owner, "POST", "/v1/models/mine/from-job",
                            {"job": job_id, "path": "../x"})
    assert escape.status == 400, escape.json()
    # A part of the outputs whose link would leave it is no version of its own.
    leaves = daemon.as_user(owner, "POST", "/v1/models/mine/from-job",
                            {"job": job_id, "path": "ckpt"})
    assert leaves.status == 400 and "leaves the tree" in leaves.json()["error"]["message"]
    bad_choice = daemon.as_user(owner, "POST", "/v1/models/mine/from-job",
                                {"job": job_id, "direction": "min"})
    assert bad_choice.status == 400 and "--metric" in bad_choice.json()["error"]["message"]
    with daemon.client() as root:
        assert root.get("/v1/models/mine").status_code == 404
