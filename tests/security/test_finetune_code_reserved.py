"""`finetune_code` names the version whose files `nai finetune` runs on a fine-tuned
model's weights. Only the server writes it (on a version made by fine-tuning): a user
who put it on their own version could have whoever fine-tunes that version run the
files of a model the victim may read and the author may not."""

from __future__ import annotations

from typing import Any

from conftest import Daemon  # type: ignore[import-not-found]


def test_a_user_may_not_set_finetune_code(daemon: Daemon, make_user: Any) -> None:
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    tree = daemon.as_user(alice, "POST", "/v1/trees", {"entries": []})
    assert tree.status == 201, tree.json()
    tree_id = tree.json()["id"]
    forged = {"finetune_code": "bobs-private@1", "finetune_command": "python train.py"}
    made = daemon.as_user(alice, "POST", "/v1/models", {
        "name": "bait", "tree_id": tree_id, "metadata": forged})
    assert made.status == 400, made.json()
    assert "finetune_code is set by the server only" in made.body.decode()
    made = daemon.as_user(alice, "POST", "/v1/models", {
        "name": "bait", "tree_id": tree_id, "metadata": {"finetune_command": "python t.py"}})
    assert made.status == 201, made.json()  # her own command on her own files: fine
    pushed = daemon.as_user(alice, "POST", "/v1/models/bait/versions", {
        "tree_id": tree_id, "metadata": forged, "allow_same": True})
    assert pushed.status == 400, pushed.json()
    versions = daemon.as_user(alice, "GET", "/v1/models/bait").json()["versions"]
    assert [v["metadata"].get("finetune_code") for v in versions] == [None]
