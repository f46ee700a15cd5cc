"""The registries' calls of `ServerClient` (datasets and models), and the server's
plugins, notifications and dataset processing, which the registry commands share."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from nai_server.protocol import (
    JobInfo,
    NotifyInfo,
    PluginInfo,
    PushedVersion,
    RegistryEntry,
    RegistrySummary,
    RegistryVersion,
    RemovalResult,
)
from nai_tui.remote.api_base import ApiBase


class RegistryCalls(ApiBase):
    """Datasets and models: `kind` is "dataset" or "model"; both have the same calls.
    `ref` is a version number, a tag or "latest"."""

    @staticmethod
    def _registry_path(kind: str, name: str | None = None, *rest: str) -> str:
        if kind not in ("dataset", "model"):
            raise ValueError(f"kind: 'dataset' or 'model', not {kind!r}")
        parts = [f"/v1/{kind}s", *(quote(p, safe="") for p in (name, *rest) if p is not None)]
        return "/".join(parts)

    def registry_list(self, kind: str) -> list[RegistrySummary]:
        """The datasets (or models) this user may read."""
        return [self._reply(RegistrySummary, e)
                for e in self._json("GET", self._registry_path(kind))]

    def registry_entry(self, kind: str, name: str) -> RegistryEntry:
        return self._reply(RegistryEntry, self._json("GET", self._registry_path(kind, name)))

    def registry_create(self, kind: str, name: str, tree_id: str, *, group: str | None = None,
                        shared: bool = False, description: str = "", tag: str | None = None,
                        metadata: dict[str, Any] | None = None) -> RegistryEntry:
        """A new dataset or model whose version 1 is `tree_id` (already uploaded)."""
        body = {"name": name, "tree_id": tree_id, "group": group, "shared": shared,
                "description": description, "tag": tag, "metadata": metadata or {}}
        return self._reply(RegistryEntry,
            self._json("POST", self._registry_path(kind), json=body))

    def registry_push(self, kind: str, name: str, tree_id: str, *, description: str = "",
                      tag: str | None = None, metadata: dict[str, Any] | None = None,
                      allow_same: bool = False) -> PushedVersion:
        """A new version of an existing dataset or model; when the latest version already
        holds `tree_id`, that version marked `unchanged` (unless `allow_same`)."""
        body = {"tree_id": tree_id, "description": description, "tag": tag,
                "metadata": metadata or {}, "allow_same": allow_same}
        return self._reply(PushedVersion,
            self._json("POST", self._registry_path(kind, name, "versions"), json=body))

    def registry_version(self, kind: str, name: str, ref: str = "latest") -> RegistryVersion:
        return self._reply(RegistryVersion,
            self._json("GET", self._registry_path(kind, name, "versions", ref)))

    def registry_remove(self, kind: str, name: str, ref: str | None = None) -> RemovalResult:
        """Remove one version (`ref`) or every version; versions still in use are kept,
        marked for deletion (the answer says which and why)."""
        path = (self._registry_path(kind, name) if ref is None
                else self._registry_path(kind, name, "versions", ref))
        return self._reply(RemovalResult, self._json("DELETE", path))

    def registry_share(self, kind: str, name: str, *, shared: bool,
                       groups: list[str]) -> RegistryEntry:
        """Set who besides the owners may read: everyone (`shared`) and/or `groups`."""
        return self._reply(RegistryEntry, self._json(
            "PUT", self._registry_path(kind, name, "sharing"),
            json={"shared": shared, "groups": groups}))

    def plugins(self) -> list[PluginInfo]:
        """The plugins installed in the server's environment, and whether they run."""
        return [self._reply(PluginInfo, p) for p in self._json("GET", "/v1/plugins")]

    def notify_list(self) -> list[NotifyInfo]:
        """This user's notification subscriptions."""
        return [self._reply(NotifyInfo, n) for n in self._json("GET", "/v1/notify")]

    def notify_add(self, via: str, target: str, events: list[str]) -> NotifyInfo:
        """Be told of this user's own jobs' `events` by notifier `via` at `target`."""
        return self._reply(NotifyInfo, self._json(
            "POST", "/v1/notify", json={"via": via, "target": target, "events": events}))

    def notify_remove(self, sub_id: int) -> NotifyInfo:
        return self._reply(NotifyInfo, self._json("DELETE", f"/v1/notify/{int(sub_id)}"))

    def process_dataset(self, dataset: str, plugin: str, /, *, version: str = "latest",
                        options: dict[str, str] | None = None,
                        **job: Any) -> JobInfo:
        """Process a dataset version with a processor the server offers, as a job of this
        user's (`to`, `gpus`, `time_limit`, `name`, `group`... in `job`)."""
        body = {"version": version, "plugin": plugin, "options": options or {},
                **{k: v for k, v in job.items() if v is not None}}
        return self._reply(JobInfo, self._json(
            "POST", self._registry_path("dataset", dataset, "process"), json=body))

    def registry_tag(self, kind: str, name: str, ref: str, tag: str | None) -> RegistryVersion:
        """Put `tag` on a version (None clears its tag)."""
        return self._reply(RegistryVersion, self._json(
            "PUT", self._registry_path(kind, name, "versions", ref, "tag"), json={"tag": tag}))

    def model_from_job(self, name: str, job_id: int, **options: Any) -> RegistryVersion:
        """A finished job's outputs as the next version of model `name` (created when
        new); `options` are ModelFromJob's fields: path, group, description, tag,
        metric, direction, with_code."""
        body = {"job": job_id, **{k: v for k, v in options.items() if v is not None}}
        return self._reply(RegistryVersion, self._json(
            "POST", self._registry_path("model", name, "from-job"), json=body))
