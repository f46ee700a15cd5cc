"""`ServerClient`: typed calls to a nai server over any `httpx.Client`.

The transport (local unix socket, SSH exec channel, system ssh) is chosen when the
`httpx.Client` is built (see `nai_tui.remote.transports`); this class only speaks the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from pydantic import ValidationError

from nai_server.protocol import (
    API_VERSION,
    ConnectionFailed,
    DrainState,
    GpuList,
    GroupInfo,
    JobInfo,
    JobList,
    LogMatches,
    Me,
    MetricsPage,
    MissingResponse,
    NaiError,
    NotifyInfo,
    PluginInfo,
    PushedVersion,
    Quota,
    RegistryEntry,
    RegistrySummary,
    RegistryVersion,
    RemovalResult,
    TreeInfo,
    TreeRef,
    UserInfo,
    VersionInfo,
    VersionMismatch,
    error_from_body,
)
from nai_tui.remote.replies import M, read_reply, unreadable

BASE_URL = "http://nai"
DEFAULT_READ_TIMEOUT = 60.0


def local_http_client(socket_path: Path, *, timeout: float = DEFAULT_READ_TIMEOUT,
                      connect_timeout: float = 10) -> httpx.Client:
    """A client for the daemon's unix socket on this machine. (SSH transports live in
    nai_tui.remote.transports, which imports paramiko: keep that off the local path.)"""
    # verify=False: plain HTTP over a unix socket never uses TLS, and building the
    # default SSL context (the CA bundle) cost 25-40 ms of every client's start.
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path), verify=False),
                        base_url=BASE_URL, timeout=httpx.Timeout(timeout, connect=connect_timeout))


class ServerClient:
    """One server's API. Errors arrive as the `NaiError` tree with messages to show."""

    def __init__(self, http: httpx.Client, name: str = "server") -> None:
        self.http = http
        self.name = name
        self._checked = False
        self._server_api: str | None = None  # the server's API version, once asked

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send_raw(method, path, **kwargs)
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _send_raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response whatever its status; connection problems as ConnectionFailed."""
        if not self._checked and path != "/v1/version":
            self.check_version()
        try:
            return self.http.request(method, path, **kwargs)
        except NaiError:
            raise
        except httpx.TimeoutException as exc:
            raise ConnectionFailed(f"{self.name}: no answer in time ({exc})") from exc
        except (httpx.TransportError, OSError) as exc:
            raise ConnectionFailed(f"{self.name}: {exc}") from exc

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        return response.json() if response.content else None

    def check_version(self) -> VersionInfo:
        """Refuse a server with another major API version, saying which side to upgrade."""
        info = self._reply(VersionInfo, self._json("GET", "/v1/version"))
        self._server_api = info.api_version
        theirs, ours = int(info.api_version.split(".")[0]), int(API_VERSION.split(".")[0])
        if theirs != ours:
            side = "this client (pip install -U nothingai)" if theirs > ours else "the server"
            raise VersionMismatch(
                f"{self.name} speaks API {info.api_version}, this client {API_VERSION}: "
                f"upgrade {side}")
        self._checked = True
        return info

    def _reply(self, model: type[M], body: Any) -> M:
        """Read an answer as `model`. Fields this client does not know are ignored (a
        newer server may add some); an answer it cannot read says which side to upgrade."""
        try:
            return read_reply(model, body)
        except ValidationError as exc:
            raise VersionMismatch(unreadable(self.name, self._server_api, model, exc)) from None

    # --- identity and GPUs ------------------------------------------------------------

    def version(self) -> VersionInfo:
        return self.check_version()

    def me(self) -> Me:
        return self._reply(Me, self._json("GET", "/v1/me"))

    def gpus(self) -> GpuList:
        return self._reply(GpuList, self._json("GET", "/v1/gpus"))

    # --- blobs and trees --------------------------------------------------------------

    def missing_blobs(self, digests: list[str]) -> list[str]:
        body = self._json("POST", "/v1/blobs/missing", json={"digests": digests})
        return self._reply(MissingResponse, body).missing

    def upload_pack(self, stream: Iterable[bytes]) -> dict[str, Any]:
        """POST a packed tar stream of blobs (see nai_tui.sync.push for the producer)."""
        return self._json("POST", "/v1/blobs", content=stream,  # type: ignore[no-any-return]
                          headers={"Content-Type": "application/x-tar"},
                          timeout=httpx.Timeout(30.0, read=None, write=None))

    def prepare_connections(self, count: int) -> None:
        """Open `count` more connections in the background (over SSH, where opening one
        takes a while), for requests about to run side by side."""
        prepare = getattr(self.http._transport, "prepare", None)  # BackendTransport's
        if prepare is not None:
            prepare(count)

    def create_tree(self, entries: list[dict[str, Any]]) -> TreeRef:
        # orjson: encoding 10,000 entries with json took 20 ms of a push's last step.
        body = orjson.dumps({"entries": entries})
        return self._reply(TreeRef, self._json(
            "POST", "/v1/trees", content=body, headers={"content-type": "application/json"}))

    def has_tree(self, tree_id: str) -> bool:
        """Whether the server already records this tree (one cheap HEAD)."""
        response = self._send_raw("HEAD", f"/v1/trees/{tree_id}")
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise _error(response)
        return True

    def tree(self, tree_id: str) -> TreeInfo:
        return self._reply(TreeInfo, self._json("GET", f"/v1/trees/{tree_id}"))

    def stream(self, path: str, params: dict[str, Any] | None = None,
               chunk: int | None = 1 << 20) -> Iterator[bytes]:
        """Stream a GET response body (tar downloads, log follow); `chunk=None` hands
        on each piece as it arrives instead of waiting to fill a chunk."""
        if not self._checked:
            self.check_version()
        try:
            with self.http.stream("GET", path, params=params,
                                  timeout=httpx.Timeout(30.0, read=None)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                yield from response.iter_bytes(chunk)
        except NaiError:
            raise
        except (httpx.TransportError, OSError) as exc:
            raise ConnectionFailed(f"{self.name}: {exc}") from exc

    # --- jobs -------------------------------------------------------------------------

    def submit(self, *, spec: dict[str, Any] | None = None, spec_yaml: str | None = None,
               source: str = "nai.yaml", overrides: dict[str, Any] | None = None,
               code_tree: str | None = None, code_from_model: bool = False,
               dry_run: bool = False) -> JobInfo:
        """Submit a job: the spec as fields or as nai.yaml text (the server validates it
        and names the lines), command-line overrides, and the code tree (or, with
        `code_from_model`, the files of the spec's model version). `dry_run`: checked
        and planned, not created (id 0, `est_start` when it would start)."""
        body: dict[str, Any] = {"source": source, "overrides": overrides or {},
                                "code_tree": code_tree, "code_from_model": code_from_model}
        if spec_yaml is not None:
            body["spec_yaml"] = spec_yaml
        else:
            body["spec"] = spec or {}
        return self._reply(JobInfo, self._json("POST", "/v1/jobs", json=body,
                                               params={"dry_run": 1} if dry_run else None))

    def jobs(self, *, scope: str = "all", state: str | None = None, user: str | None = None,
             limit: int = 100, offset: int = 0, before: int | None = None,
             since: float | None = None) -> JobList:
        params: dict[str, Any] = {"scope": scope, "limit": limit, "offset": offset}
        if before is not None:
            params["before"] = before
        if since is not None:
            params["since"] = since
        if state:
            params["state"] = state
        if user:
            params["user"] = user
        return self._reply(JobList, self._json("GET", "/v1/jobs", params=params))

    def job(self, job_id: int) -> JobInfo:
        return self._reply(JobInfo, self._json("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: int) -> JobInfo:
        return self._reply(JobInfo, self._json("DELETE", f"/v1/jobs/{job_id}"))

    def logs(self, job_id: int, offset: int = 0) -> bytes:
        return self._send("GET", f"/v1/jobs/{job_id}/logs", params={"offset": offset}).content

    def follow_logs(self, job_id: int, offset: int = 0) -> Iterator[bytes]:
        """The log as it is written, until the job ends."""
        return self.stream(f"/v1/jobs/{job_id}/logs", {"offset": offset, "follow": "true"},
                           chunk=None)  # a line printed is a line shown, not 16 KiB later

    def metrics(self, job_id: int, since: int = 0) -> MetricsPage:
        return self._reply(MetricsPage,
            self._json("GET", f"/v1/jobs/{job_id}/metrics", params={"since": since}))

    def outputs(self, job_id: int) -> TreeInfo:
        return self._reply(TreeInfo, self._json("GET", f"/v1/jobs/{job_id}/outputs"))

    def log_range(self, job_id: int, offset: int, length: int) -> tuple[bytes, int]:
        """Up to `length` bytes of the log from byte `offset` (the server caps a call
        at MAX_LOG_RANGE), and the log's size: a pager reads any part of any log."""
        response = self._send("GET", f"/v1/jobs/{job_id}/logs/range",
                              params={"offset": offset, "length": length})
        return response.content, int(response.headers.get("X-Log-Size", "0"))

    def log_search(self, job_id: int, text: str, offset: int = 0, *, backward: bool = False,
                   limit: int = 100) -> LogMatches:
        """Byte offsets of `text` in the log from `offset` on (before it with
        `backward`), nearest first; continue from `next` when it is not None."""
        return LogMatches.model_validate(self._json(
            "GET", f"/v1/jobs/{job_id}/logs/search",
            params={"q": text, "offset": offset, "backward": backward, "limit": limit}))

    # --- admin ------------------------------------------------------------------------
    # Users, groups, quotas and drain: the routes `nai-admin` uses. The server refuses
    # them (Forbidden) unless the caller is an admin.

    def users(self) -> list[UserInfo]:
        """Every registered user."""
        return [self._reply(UserInfo, u) for u in self._json("GET", "/v1/users")]

    def add_user(self, name: str) -> UserInfo:
        return self._reply(UserInfo, self._json("POST", "/v1/users", json={"name": name}))

    def remove_user(self, name: str) -> None:
        self._json("DELETE", f"/v1/users/{name}")

    def groups(self) -> list[GroupInfo]:
        return [self._reply(GroupInfo, g) for g in self._json("GET", "/v1/groups")]

    def add_group(self, name: str) -> GroupInfo:
        return self._reply(GroupInfo, self._json("POST", "/v1/groups", json={"name": name}))

    def add_member(self, group: str, user: str) -> GroupInfo:
        return self._reply(GroupInfo,
            self._json("POST", f"/v1/groups/{group}/members", json={"user": user}))

    def set_quota(self, kind: str, name: str, quota: Quota) -> Quota:
        """Set the quota of a user (`kind="users"`) or a group (`kind="groups"`)."""
        if kind not in ("users", "groups"):
            raise ValueError(f"kind: 'users' or 'groups', not {kind!r}")
        return self._reply(Quota,
            self._json("PUT", f"/v1/{kind}/{name}/quota", json=quota.model_dump()))

    def drained(self) -> bool:
        """Whether the server is drained (queued jobs stay queued)."""
        return self._reply(DrainState, self._json("GET", "/v1/drain")).drained

    def drain(self, drained: bool) -> bool:
        """Drain or undrain the server; returns the new state."""
        return self._reply(DrainState,
            self._json("PUT", "/v1/drain", json={"drained": drained})).drained

    # --- registries -------------------------------------------------------------------
    # Datasets and models: `kind` is "dataset" or "model"; both have the same calls.
    # `ref` is a version number, a tag or "latest".

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


def _error(response: httpx.Response) -> NaiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return error_from_body(response.status_code, body)
