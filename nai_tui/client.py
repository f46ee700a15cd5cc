"""`ServerClient`: typed calls to a nai server over any `httpx.Client`.

The transport (local unix socket, SSH exec channel, system ssh) is chosen when the
`httpx.Client` is built (see `nai_tui.transports`); this class only speaks the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from nai_server.protocol import (
    API_VERSION,
    ConnectionFailed,
    DrainState,
    GpuList,
    GroupInfo,
    JobInfo,
    JobList,
    Me,
    MetricsPage,
    NaiError,
    Quota,
    TreeInfo,
    TreeRef,
    UserInfo,
    VersionInfo,
    VersionMismatch,
    error_from_body,
)


class ServerClient:
    """One server's API. Errors arrive as the `NaiError` tree with messages to show."""

    def __init__(self, http: httpx.Client, name: str = "server") -> None:
        self.http = http
        self.name = name
        self._checked = False

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
        info = VersionInfo.model_validate(self._json("GET", "/v1/version"))
        theirs, ours = int(info.api_version.split(".")[0]), int(API_VERSION.split(".")[0])
        if theirs != ours:
            side = "this client (pip install -U nothingai)" if theirs > ours else "the server"
            raise VersionMismatch(
                f"{self.name} speaks API {info.api_version}, this client {API_VERSION}: "
                f"upgrade {side}")
        self._checked = True
        return info

    # --- identity and GPUs ------------------------------------------------------------

    def version(self) -> VersionInfo:
        return self.check_version()

    def me(self) -> Me:
        return Me.model_validate(self._json("GET", "/v1/me"))

    def gpus(self) -> GpuList:
        return GpuList.model_validate(self._json("GET", "/v1/gpus"))

    # --- blobs and trees --------------------------------------------------------------

    def missing_blobs(self, digests: list[str]) -> list[str]:
        body = self._json("POST", "/v1/blobs/missing", json={"digests": digests})
        return list(body["missing"])

    def upload_pack(self, stream: Iterable[bytes]) -> dict[str, Any]:
        """POST a packed tar stream of blobs (see nai_tui.sync for the producer)."""
        return self._json("POST", "/v1/blobs", content=stream,  # type: ignore[no-any-return]
                          headers={"Content-Type": "application/x-tar"},
                          timeout=httpx.Timeout(30.0, read=None, write=None))

    def create_tree(self, entries: list[dict[str, Any]]) -> TreeRef:
        return TreeRef.model_validate(self._json("POST", "/v1/trees", json={"entries": entries}))

    def has_tree(self, tree_id: str) -> bool:
        """Whether the server already records this tree (one cheap HEAD)."""
        response = self._send_raw("HEAD", f"/v1/trees/{tree_id}")
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise _error(response)
        return True

    def tree(self, tree_id: str) -> TreeInfo:
        return TreeInfo.model_validate(self._json("GET", f"/v1/trees/{tree_id}"))

    def stream(self, path: str, params: dict[str, Any] | None = None,
               chunk: int = 1 << 20) -> Iterator[bytes]:
        """Stream a GET response body (tar downloads, log follow)."""
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
               code_tree: str | None = None) -> JobInfo:
        """Submit a job: the spec as fields or as nai.yaml text (the server validates it
        and names the lines), command-line overrides, and the code tree."""
        body: dict[str, Any] = {"source": source, "overrides": overrides or {},
                                "code_tree": code_tree}
        if spec_yaml is not None:
            body["spec_yaml"] = spec_yaml
        else:
            body["spec"] = spec or {}
        return JobInfo.model_validate(self._json("POST", "/v1/jobs", json=body))

    def jobs(self, *, scope: str = "all", state: str | None = None, user: str | None = None,
             limit: int = 100, offset: int = 0) -> JobList:
        params: dict[str, Any] = {"scope": scope, "limit": limit, "offset": offset}
        if state:
            params["state"] = state
        if user:
            params["user"] = user
        return JobList.model_validate(self._json("GET", "/v1/jobs", params=params))

    def job(self, job_id: int) -> JobInfo:
        return JobInfo.model_validate(self._json("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: int) -> JobInfo:
        return JobInfo.model_validate(self._json("DELETE", f"/v1/jobs/{job_id}"))

    def logs(self, job_id: int, offset: int = 0) -> bytes:
        return self._send("GET", f"/v1/jobs/{job_id}/logs", params={"offset": offset}).content

    def follow_logs(self, job_id: int, offset: int = 0) -> Iterator[bytes]:
        """The log as it is written, until the job ends."""
        return self.stream(f"/v1/jobs/{job_id}/logs", {"offset": offset, "follow": "true"},
                           chunk=1 << 14)

    def metrics(self, job_id: int, since: int = 0) -> MetricsPage:
        return MetricsPage.model_validate(
            self._json("GET", f"/v1/jobs/{job_id}/metrics", params={"since": since}))

    def outputs(self, job_id: int) -> TreeInfo:
        return TreeInfo.model_validate(self._json("GET", f"/v1/jobs/{job_id}/outputs"))

    def output_archive(self, job_id: int, path: str = "") -> Iterator[bytes]:
        return self.stream(f"/v1/jobs/{job_id}/outputs/archive", {"path": path})

    def output_file(self, job_id: int, path: str) -> Iterator[bytes]:
        return self.stream(f"/v1/jobs/{job_id}/outputs/file", {"path": path})

    # --- admin ------------------------------------------------------------------------
    # Users, groups, quotas and drain: the routes `nai-admin` uses. The server refuses
    # them (Forbidden) unless the caller is an admin.
    # REGISTRIES: datasets and models get their calls here once the server has them.

    def users(self) -> list[UserInfo]:
        """Every registered user."""
        return [UserInfo.model_validate(u) for u in self._json("GET", "/v1/users")]

    def add_user(self, name: str) -> UserInfo:
        return UserInfo.model_validate(self._json("POST", "/v1/users", json={"name": name}))

    def remove_user(self, name: str) -> None:
        self._json("DELETE", f"/v1/users/{name}")

    def groups(self) -> list[GroupInfo]:
        return [GroupInfo.model_validate(g) for g in self._json("GET", "/v1/groups")]

    def add_group(self, name: str) -> GroupInfo:
        return GroupInfo.model_validate(self._json("POST", "/v1/groups", json={"name": name}))

    def add_member(self, group: str, user: str) -> GroupInfo:
        return GroupInfo.model_validate(
            self._json("POST", f"/v1/groups/{group}/members", json={"user": user}))

    def set_quota(self, kind: str, name: str, quota: Quota) -> Quota:
        """Set the quota of a user (`kind="users"`) or a group (`kind="groups"`)."""
        if kind not in ("users", "groups"):
            raise ValueError(f"kind: 'users' or 'groups', not {kind!r}")
        return Quota.model_validate(
            self._json("PUT", f"/v1/{kind}/{name}/quota", json=quota.model_dump()))

    def drained(self) -> bool:
        """Whether the server is drained (queued jobs stay queued)."""
        return DrainState.model_validate(self._json("GET", "/v1/drain")).drained

    def drain(self, drained: bool) -> bool:
        """Drain or undrain the server; returns the new state."""
        return DrainState.model_validate(
            self._json("PUT", "/v1/drain", json={"drained": drained})).drained


def _error(response: httpx.Response) -> NaiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return error_from_body(response.status_code, body)
