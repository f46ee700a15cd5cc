"""Everyone sees the queue, but another user's job shows neither its code tree (the id
that downloads the code), nor its outputs, nor the values of its environment."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nai_server.app.accounts import Caller
from nai_server.app.use_cases import UseCases
from nai_server.core.spec import spec_from_dict
from nai_server.host import unix
from nai_server.testing import make_service, pack


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


ME = unix.user_name(os.getuid()) or str(os.getuid())


@pytest.fixture
def service(tmp_path: Path) -> Iterator[UseCases]:
    made = make_service(tmp_path / "s", mode="multi-user")
    made.accounts.add_user(ME)
    yield made
    made.close()


def test_others_see_a_job_but_not_its_code_outputs_or_secrets(service: UseCases) -> None:
    code = b"print('private')\n"
    owner = Caller("someone-else", uid=60_000, admin=False)
    with service.blobs.receiver(1 << 20, owner.user) as receiver:  # as their upload does
        receiver.feed(pack({sha256_hex(code): code}))
        receiver.finish()
    tree_id = service.create_tree(owner, [
        {"path": "train.py", "size": len(code), "mode": 0o644, "sha256": sha256_hex(code)}]).id
    job = service.jobs.submit(
        owner, spec_from_dict({"command": "python train.py", "env": {"WANDB_API_KEY": "s3cret"}}),
        tree_id)

    viewer = Caller("viewer", uid=60_001, admin=False)
    seen = service.jobs.show(viewer, job.id).model_dump()
    assert seen["user"] == "someone-else" and seen["spec"]["command"] == "python train.py"
    assert seen["code_tree"] is None and seen["output_tree"] is None
    assert seen["spec"]["env"] == {"WANDB_API_KEY": "(hidden)"}
    listed = {j.id: j for j in service.jobs.list(viewer, scope="all").jobs}
    assert "s3cret" not in str(listed[job.id]) and listed[job.id].code_tree is None

    owner = service.jobs.show(Caller("someone-else", uid=60_000, admin=False), job.id)
    assert owner.code_tree == tree_id and owner.spec["env"] == {"WANDB_API_KEY": "s3cret"}
    assert service.jobs.show(Caller("root-like", uid=0, admin=True), job.id).code_tree
