"""`ServerClient`: typed calls to a nai server over any `httpx.Client`.

The transport (local unix socket, SSH exec channel, system ssh) is chosen when the
`httpx.Client` is built (see `nai_tui.remote.transports`); this class only speaks the API.
The plumbing is in `api_base`, the registries' calls in `registry_calls` and the
services' in `service_calls`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from nai_server.protocol import (
    DrainState,
    GpuList,
    GroupInfo,
    JobInfo,
    JobList,
    LogMatches,
    Me,
    MetricsPage,
    MissingResponse,
    Quota,
    TreeInfo,
    TreeRef,
    UserInfo,
    VersionInfo,
)

# Re-exported (`as`): the transports import these from here with the client.
from nai_server.protocol.jobs import LOG_STDERR_HEADER, LogPiece, parse_spans
from nai_tui.remote.api_base import BASE_URL as BASE_URL
from nai_tui.remote.api_base import DEFAULT_READ_TIMEOUT as DEFAULT_READ_TIMEOUT
from nai_tui.remote.api_base import response_error
from nai_tui.remote.registry_calls import RegistryCalls
from nai_tui.remote.service_calls import ServiceCalls


def local_http_client(socket_path: Path, *, timeout: float = DEFAULT_READ_TIMEOUT,
                      connect_timeout: float = 10) -> httpx.Client:
    """A client for the daemon's unix socket on this machine. (SSH transports live in
    nai_tui.remote.transports, which imports paramiko: keep that off the local path.)"""
    # verify=False: plain HTTP over a unix socket never uses TLS, and building the
    # default SSL context (the CA bundle) cost 25-40 ms of every client's start.
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path), verify=False),
                        base_url=BASE_URL, timeout=httpx.Timeout(timeout, connect=connect_timeout))


class ServerClient(RegistryCalls, ServiceCalls):
    """One server's API. Errors arrive as the `NaiError` tree with messages to show."""

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            raise response_error(response)
        return True

    def tree(self, tree_id: str) -> TreeInfo:
        return self._reply(TreeInfo, self._json("GET", f"/v1/trees/{tree_id}"))

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

    def log_piece(self, job_id: int, offset: int, length: int) -> LogPiece:
        """As log_range, with which of the bytes came from the job's stderr (none from a
        server that does not tell: all then reads as stdout)."""
        response = self._send("GET", f"/v1/jobs/{job_id}/logs/range",
                              params={"offset": offset, "length": length})
        data = response.content
        spans = parse_spans(offset, len(data), response.headers.get(LOG_STDERR_HEADER, ""))
        return LogPiece(offset, data, int(response.headers.get("X-Log-Size", "0")), spans)

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
