"""A finished job's outputs as a model version, after the fact (`nai model register JOB`).

What `register_model:` in a spec does when the job succeeds, asked for later, by anyone
who may read the job's outputs and write the model: the outputs (or the folder or file
`path` in them) become the next version of the model, nothing is copied or pulled, and
the version's metadata keeps the job's lineage (job, code tree, dataset and model
versions) and a summary of its metrics: the best and the last value of each, "best" by
the direction given for the chosen metric or guessed from each name.

With `with_code`, the version holds the job's code as well (outputs on top of it, never
replacing a file of it silently) and its command as `finetune_command`, so that
`nai finetune` can run it again on other data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nai_server.app.accounts import Caller
from nai_server.app.finetune_origin import finetune_origin
from nai_server.app.jobs import Jobs
from nai_server.app.registry import Registry
from nai_server.core import trees
from nai_server.core.job import Job
from nai_server.core.metric_summary import check_metric_choice
from nai_server.host import mounts
from nai_server.protocol import Conflict, Invalid, ModelFromJob, RegistryVersion
from nai_server.protocol.base import NAME_PATTERN, NAME_RULE
from nai_server.store.blobs import BlobStore, MissingBlobs

Doc = dict[str, Any]


class JobModels:
    """Registers jobs' outputs as model versions."""

    def __init__(self, jobs: Jobs, registry: Registry, blobs: BlobStore,
                 job_dir: Callable[[int], Path]) -> None:
        self.jobs = jobs
        self.registry = registry
        self.blobs = blobs
        self.job_dir = job_dir

    def register(self, caller: Caller, name: str, body: ModelFromJob) -> RegistryVersion:
        if not re.fullmatch(NAME_PATTERN, name):
            raise Invalid(f"model name {name!r}: {NAME_RULE}")
        try:
            directions = check_metric_choice(body.metric, body.direction)
        except ValueError as exc:
            raise Invalid(str(exc)) from exc
        # Readable (403 naming the owner otherwise), ended, and with outputs.
        outputs = self.jobs.output_tree(caller, body.job)
        job = self.jobs.readable(caller, body.job)
        tree_id = self._select(outputs, body.path, job)
        if body.with_code:
            tree_id = self._with_code(tree_id, job)
        chosen = None if body.metric is None else {"name": body.metric,
                                                   "direction": directions[body.metric]}
        metadata = mounts.output_metadata(job, self.job_dir(body.job), chosen)
        metadata["source"] = {"job": body.job, "path": body.path or "",
                              "state": job.state.value}
        if body.with_code:
            metadata["finetune_command"] = job.spec.command
        else:  # the outputs of `nai finetune`: fine-tuned again by the same code
            model = mounts.pinned(job, "model")
            metadata.update(finetune_origin(self.registry, model, job.code_tree,
                                            job.spec.command))
        where = f" ({body.path})" if body.path else ""
        called = f" ({job.spec.name})" if job.spec.name else ""
        return self.registry.register_output(
            caller, name, tree_id, group=body.group, tag=body.tag,
            description=body.description or f"outputs{where} of job {body.job}{called}",
            metadata=metadata)

    def _select(self, tree_id: str, path: str, job: Job) -> str:
        """The outputs, or the part of them at `path` (a folder's contents at the
        version's top; a file as itself)."""
        if not path.strip("/"):
            return tree_id
        entries = self.blobs.get_tree(tree_id)
        try:
            chosen = trees.select(entries, path)
        except trees.TreeError as exc:
            raise Invalid(f"path {path!r}: {exc}") from exc
        if not chosen:
            tops = sorted({e.path.split("/")[0] for e in entries})
            shown = ", ".join(tops[:10]) + (" ..." if len(tops) > 10 else "")
            raise Invalid(f"job {job.id}'s outputs hold nothing at {path!r} (they hold: "
                          f"{shown or 'nothing'}; `nai pull {job.id}` shows them all)")
        prefix = path.strip("/")
        cut = len(prefix) + 1
        picked = [trees.Entry(e.path[cut:] if e.path != prefix else e.path.rsplit("/", 1)[-1],
                              e.kind, e.size, e.mode, e.sha256, e.target) for e in chosen]
        return self._record(picked, f"the outputs at {path!r}")

    def _with_code(self, tree_id: str, job: Job) -> str:
        code = job.code_tree
        if not code:
            raise Invalid(f"job {job.id} ran no uploaded code; register it without "
                          f"--with-code")
        outputs = self.blobs.get_tree(tree_id)
        code_entries = self.blobs.get_tree(code)
        taken = {e.path for e in outputs}
        dirs = {p.rsplit("/", i)[0] for p in taken for i in range(1, p.count("/") + 1)}
        clash = sorted(e.path for e in code_entries if e.path in taken or e.path in dirs)
        if clash:
            raise Conflict(f"the outputs and the code both hold {clash[0]!r}"
                           + (f" (and {len(clash) - 1} more)" if len(clash) > 1 else "")
                           + "; register a folder of the outputs (--path) instead")
        return self._record([*code_entries, *outputs], "the code with the outputs")

    def _record(self, entries: list[trees.Entry], what: str) -> str:
        try:
            return self.blobs.put_tree(entries)
        except trees.TreeError as exc:
            raise Invalid(f"{what} cannot be a model version: {exc}") from exc
        except MissingBlobs as exc:
            raise Conflict(f"{what}: {len(exc.digests)} file(s) are missing from the "
                           f"server's store (`nai-admin store verify` says more)") from exc
