"""What a service must pass before it is recorded: its version's `serve:` section, room
on this server and within its owners' GPU quotas, the caps that keep one user from
growing the daemon's state without bound (services at once, tokens per service), and
the model versions services pin, which the registry must not remove under them.

Called under the store's lock; reads only memory and the (bounded) nai.yaml blob.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable
from typing import Any

import yaml

from nai_server.app import service_gpus
from nai_server.app.accounts import Caller
from nai_server.config import JobsConfig, ServicesConfig
from nai_server.core import resources
from nai_server.core import service_rules as rules
from nai_server.core.processing import is_session, unsaved
from nai_server.core.service_rules import live
from nai_server.core.states import SERVICE_TERMINAL
from nai_server.core.units import format_size, parse_size
from nai_server.host.cgroup_limits import host_memory
from nai_server.host.gpus import GpuSnapshot
from nai_server.protocol import Conflict, Forbidden, Invalid
from nai_server.protocol.services import ServiceUpdate
from nai_server.store.blobs import BlobStore
from nai_server.store.db import TinyDbStore

Doc = dict[str, Any]
MAX_NAI_YAML = 64 * 1024


def serve_section(blobs: BlobStore, tree_id: str, ref: str) -> rules.Serve:
    """The version's nai.yaml `serve:` section (or the zero-code default)."""
    entry = next((e for e in blobs.get_tree(tree_id)
                  if e.path == "nai.yaml" and e.kind == "file"), None)
    if entry is None:
        return rules.Serve()
    if entry.size > MAX_NAI_YAML:
        raise Invalid(f"{ref}: nai.yaml is larger than {MAX_NAI_YAML} bytes")
    with blobs.open(entry.sha256) as f:
        text = f.read(MAX_NAI_YAML)
    try:
        loaded = yaml.safe_load(text)
        return rules.parse_serve(loaded.get("serve") if isinstance(loaded, dict) else None)
    except (yaml.YAMLError, rules.ServeError) as exc:
        raise Invalid(f"{ref}: nai.yaml: {exc}") from exc


def gpu_memory(asked: str | None, serve: rules.Serve, each: int,
               snapshot: GpuSnapshot | None) -> int | None:
    """Bytes of free memory each of a replica's GPUs needs (None: any), from the request
    or the `serve:` section; refused if no GPU here has that much."""
    if asked is not None:
        try:
            need: int | None = parse_size(asked)
        except ValueError as exc:
            raise Invalid(f"gpu_memory: {exc} (write it like 8G or 512M)") from exc
    else:
        need = serve.gpu_memory
    if not need or not each:
        return None
    if snapshot is None:  # Slurm's GPUs: not known here
        return need
    biggest = max((g.memory_total for g in snapshot.gpus), default=0)
    if need > biggest:
        raise Invalid(f"gpu_memory: {format_size(need)} asked for each GPU, but the largest "
                      f"GPU here has {format_size(biggest)}; ask for less")
    return need


def limits(jobs: JobsConfig, serve: rules.Serve) -> tuple[int | None, float | None]:
    """Each replica's memory and CPU limits: the `serve:` section's, else the server's
    defaults for jobs; refused beyond the jobs' maximum or what the host has."""
    try:
        return resources.limits(serve.memory, serve.cpus, host_memory=host_memory(),
                                host_cpus=os.cpu_count() or 1,
                                default_memory=jobs.default_memory, max_memory=jobs.max_memory,
                                default_cpus=jobs.default_cpus, max_cpus=jobs.max_cpus)
    except ValueError as exc:
        raise Invalid(f"serve.{exc}") from exc


def check_quota(store: TinyDbStore, snapshot: GpuSnapshot | None, user: str,
                group: str | None, each: int, replicas: int) -> None:
    """Refuse a service that could never run: on this server (None: GPUs are Slurm's
    to check), within its owners' GPU quotas."""
    total = len(snapshot.gpus) if snapshot is not None else each
    if each > total:
        raise Invalid(f"each replica would need {each} GPU(s); this server has {total}")
    gpus = each * replicas
    for kind, name in (("user", user), ("group", group)):
        limit = service_gpus.max_gpus(store, kind, name)
        if limit is not None and gpus > limit:
            raise Forbidden(f"this service needs {gpus} GPU(s) in all, more than the "
                            f"{limit} {kind} {name}'s quota allows; ask for fewer "
                            f"(--gpus, --replicas) or ask an admin to raise the quota")


def check_group(store: TinyDbStore, caller: Caller, group: str | None) -> None:
    """A service owned by a group is made by one of its members (or an admin)."""
    if group is None:
        return
    found = store.get_group(group)
    if found is None:
        raise Invalid(f"no group named {group!r}")
    if not caller.admin and caller.user not in found["members"]:
        raise Forbidden(f"you are not a member of group {group!r}")


def check_name_free(old: Doc | None, name: str) -> bool:
    """A new service may take the name of a stopped or failed one whose replicas are
    gone (True: it replaces one)."""
    if old is None:
        return False
    if old["state"] not in SERVICE_TERMINAL:
        raise Conflict(f"a service named {name!r} exists; pick another name or update it "
                       f"(`nai service update {name}`)")
    if old["replica_docs"] or unsaved(old):
        raise Conflict(f"service {name!r} is still stopping; try again in a few seconds")
    return True


def check_room(settings: ServicesConfig, docs: Iterable[Doc], user: str) -> None:
    """A user runs at most `max_services_per_user` services at once (stopped and failed
    ones do not count: they are removed in time, see service_upkeep; but an annotate
    session waiting to save its labels does: its document is kept until then, and its
    user can hold that off)."""
    running = sorted(d["name"] for d in docs if d["user"] == user
                     and (d["state"] not in SERVICE_TERMINAL or unsaved(d)))
    most = settings.max_services_per_user
    if len(running) >= most:
        shown = ", ".join(running[:5]) + (", ..." if len(running) > 5 else "")
        raise Conflict(f"{user} runs {len(running)} services ({shown}), the most this "
                       f"server allows; stop one first (`nai service stop NAME`), or "
                       f"wait until a stopped annotate session's labels are saved")


def check_replicas(settings: ServicesConfig, docs: Iterable[Doc], user: str, replicas: int,
                   name: str | None = None) -> None:
    """A user's services (not stopped or failed) have at most `max_replicas_per_user`
    replicas in all, GPUs or none: CPU-only ones escape the GPU quotas. `name`: the
    service being scaled, whose own count is replaced (scaling down is always allowed)."""
    current, others = 0, 0
    for doc in docs:
        if doc["user"] != user or doc["state"] in SERVICE_TERMINAL:
            continue
        if doc["name"] == name:
            current = doc["replicas"]
        else:
            others += doc["replicas"]
    most = settings.max_replicas_per_user
    if replicas > current and others + replicas > most:
        raise Conflict(f"{user}'s services would have {others + replicas} replicas in all, "
                       f"more than the {most} this server allows "
                       f"(services.max_replicas_per_user); ask for fewer (--replicas) or "
                       f"scale another service down (`nai service scale NAME --replicas N`)")


def check_tokens(settings: ServicesConfig, doc: Doc) -> None:
    most = settings.max_tokens_per_service
    if len(doc["tokens"]) >= most:
        raise Conflict(f"service {doc['name']!r} has {len(doc['tokens'])} tokens, the most "
                       f"allowed; revoke one first (`nai service token list {doc['name']}`, "
                       f"then `nai service token revoke {doc['name']} ID`)")


def serving(docs: Iterable[Doc], model: str, versions: Collection[int],
            visible: Callable[[Doc], bool]) -> tuple[list[str], int]:
    """The services (not stopped or failed) whose replicas serve or are about to serve
    one of these versions of `model`: those `visible` to the caller with the version,
    ["resnet (cifar@3)", ...], and how many others (their names are not the caller's
    to learn)."""
    found: list[str] = []
    hidden = 0
    for doc in docs:
        if doc["state"] in SERVICE_TERMINAL or is_session(doc):  # (a session's: a dataset)
            continue
        refs = [ref for ref in sorted({doc["model"], *(r["model"] for r in live(doc))})
                if _serves(ref, model, versions)]
        if refs and visible(doc):
            found.extend(f"{doc['name']} ({ref})" for ref in refs)
        elif refs:
            hidden += 1
    return found, hidden


def _serves(ref: str, model: str, versions: Collection[int]) -> bool:
    name, _, version = ref.partition("@")
    return name == model and version.isdigit() and int(version) in versions


def refuse_served(docs: Iterable[Doc], model: str, versions: Collection[int],
                  visible: Callable[[Doc], bool]) -> None:
    """Conflict while a service serves one of these versions of `model`, naming only
    the services the caller may see (a private one's name is its owner's business)."""
    shown, hidden = serving(docs, model, versions, visible)
    if not shown and not hidden:
        return
    unseen = f"{hidden} service{'' if hidden == 1 else 's'} you cannot see"
    if not shown:
        raise Conflict(f"model {model} is served by {unseen}; ask their owners to stop "
                       f"them or move them to another version")
    served = ", ".join(shown) + (f" and {unseen}" if hidden else "")
    raise Conflict(f"model {model} is served by {served}; stop the service first "
                   f"(`nai service stop NAME`) or move it to another version "
                   f"(`nai service update NAME --model ...`)")


def check_session_update(doc: Doc, body: ServiceUpdate | None) -> None:
    """An annotate session serves one annotator over one dataset version, from one
    replica (its app keeps the labels in memory), and is reached only as a caller who
    may read that dataset: no other model, no more replicas, not public, no gateway
    tokens (`body` None)."""
    if not is_session(doc):
        return
    name = doc["name"]
    if body is None or body.public:
        raise Invalid(f"service {name!r} is an annotate session: it is opened through "
                      f"`nai service forward {name}`, as someone who may read its dataset, "
                      f"never with a gateway token")
    if body.model is not None:
        raise Invalid(f"service {name!r} is an annotate session over {doc['model']}: stop "
                      f"it (its labels are saved) and `nai dataset annotate` another version")
    if body.replicas is not None and body.replicas > 1:
        raise Invalid(f"service {name!r} is an annotate session: it runs one replica (0 "
                      f"pauses it, its labels kept)")
