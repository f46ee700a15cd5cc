"""What a model version made by fine-tuning inherits so that `nai finetune` can run on it
again.

`nai finetune M@1` runs M@1's own files (its code and weights) as the job's code. The
version its outputs become holds weights only, so it keeps the job's command as its
`finetune_command` and names the version whose files hold that code as
`finetune_code`; `nai finetune M@2` runs that code with M@2 as `$NAI_MODEL_DIR`, and
the versions made from it inherit the same, down any chain of fine-tunings. A chain
keeps its code: each version's lineage names the one before, which is kept while so
named (`registry_rules.keep_reasons`).
"""

from __future__ import annotations

from typing import Any

from nai_server.app.registry import Registry
from nai_server.core import registry_rules as rules

Doc = dict[str, Any]


def finetune_origin(registry: Registry, model: str | None, code_tree: str | None,
                    command: str) -> Doc:
    """`finetune_command` and `finetune_code` for a version made of the outputs of a job
    that ran the fine-tuning code of its pinned model version `model` (name@N) with
    `command`; empty for any other job (its code is not a model's)."""
    if model is None or code_tree is None:
        return {}
    with registry.lock:
        held = rules.finetune_code(_pinned(registry, model), model.partition("@")[0])
        holder = _pinned(registry, held) if held else None
    if holder is None or holder["tree_id"] != code_tree:
        return {}
    return {"finetune_command": command, "finetune_code": held}


def _pinned(registry: Registry, ref: str) -> Doc | None:
    """Model version `name@N`, marked for deletion or not (a job pinned it)."""
    name, _, number = ref.partition("@")
    doc = registry.store.get_registry_entry("model", name)
    found = rules.find_version(doc, number, deleted=True) if doc else None
    return dict(found) if found is not None else None
