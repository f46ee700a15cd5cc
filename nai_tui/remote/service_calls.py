"""The services' calls of `ServerClient`: a model version served on the server's GPUs;
requests reach it through the daemon (`/v1/services/{name}/invoke/{path}`), which checks
who may call it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, unquote

import httpx

from nai_server.protocol import (
    Invalid,
    ServiceCreate,
    ServiceInfo,
    ServiceList,
    ServiceUpdate,
    TokenCreate,
    TokenInfo,
)
from nai_tui.remote.api_base import DEFAULT_READ_TIMEOUT, ApiBase, connection_errors


def inner_path(path: str) -> str:
    """A path below a service's (or a job app's) own route, as given by whoever calls a
    forwarded port. A `.` or `..` segment is refused: the HTTP client would resolve it
    and the request would reach another route of the API, as you."""
    path = path.lstrip("/")
    for segment in path.split("?", 1)[0].split("/"):
        if unquote(segment) in (".", ".."):
            raise Invalid(f"{path!r}: a path with . or .. segments is not passed on")
    return path

class ServiceCalls(ApiBase):
    """Services: create, scale, roll over, stop, follow their logs, call them, and
    the gateway's tokens."""

    @staticmethod
    def _service_path(name: str | None = None, *rest: str) -> str:
        return "/".join(["/v1/services", *(quote(p, safe="") for p in (name, *rest)
                                           if p is not None)])

    def services(self) -> ServiceList:
        """The services this user may see."""
        return self._reply(ServiceList, self._json("GET", self._service_path()))

    def service(self, name: str) -> ServiceInfo:
        return self._reply(ServiceInfo, self._json("GET", self._service_path(name)))

    def create_service(self, request: ServiceCreate) -> ServiceInfo:
        """Start serving a model version; the answer comes once the record is made (its
        replicas start in the background: poll `service` for `ready`)."""
        return self._reply(ServiceInfo, self._json(
            "POST", self._service_path(), json=request.model_dump(exclude_none=True)))

    def update_service(self, name: str, update: ServiceUpdate) -> ServiceInfo:
        """Change a service: a new `model` rolls over to it, `replicas` scales it."""
        return self._reply(ServiceInfo, self._json(
            "PATCH", self._service_path(name), json=update.model_dump(exclude_none=True)))

    def stop_service(self, name: str) -> ServiceInfo:
        return self._reply(ServiceInfo, self._json("DELETE", self._service_path(name)))

    def service_logs(self, name: str, replica: int = 0, offset: int = 0) -> bytes:
        return self._send("GET", self._service_path(name, "logs"),
                          params={"replica": replica, "offset": offset}).content

    def follow_service_logs(self, name: str, replica: int = 0,
                            offset: int = 0) -> Iterator[bytes]:
        """A replica's log as it is written, until the replica ends."""
        return self.stream(self._service_path(name, "logs"),
                           {"replica": replica, "offset": offset, "follow": "true"}, chunk=None)

    def _invoke_path(self, name: str, path: str) -> str:
        return self._service_path(name, "invoke") + "/" + inner_path(path)

    def invoke(self, name: str, path: str = "predict", *, method: str = "POST",
               json: Any = None, content: bytes | None = None,
               headers: dict[str, str] | None = None,
               timeout: float | None = DEFAULT_READ_TIMEOUT) -> httpx.Response:
        """One request to the service, answered by one of its ready replicas. The
        service's own answer comes back whatever its status (errors of the daemon's,
        such as no replica ready, are JSON error bodies as usual)."""
        return self._send_raw(method, self._invoke_path(name, path), json=json,
                              content=content, headers=headers,
                              timeout=httpx.Timeout(30.0, read=timeout))

    @contextmanager
    def invoke_stream(self, name: str, path: str, *, method: str = "POST",
                      content: Iterable[bytes] | bytes | None = None,
                      headers: dict[str, str] | None = None, params: Any = None,
                      timeout: float | None = DEFAULT_READ_TIMEOUT * 5
                      ) -> Iterator[httpx.Response]:
        """As `invoke`, the answer's body left to stream (what `nai service forward`
        relays); connection problems as ConnectionFailed."""
        if not self._checked:
            self.check_version()
        url = self._invoke_path(name, path)
        with connection_errors(self.name), self.http.stream(
                method, url, content=content, headers=headers, params=params,
                timeout=httpx.Timeout(30.0, read=timeout)) as response:
            yield response

    def create_token(self, name: str, label: str = "") -> TokenInfo:
        """A bearer token for the HTTP gateway; its secret is in the answer only."""
        return self._reply(TokenInfo, self._json(
            "POST", self._service_path(name, "tokens"),
            json=TokenCreate(label=label).model_dump()))

    def tokens(self, name: str) -> list[TokenInfo]:
        return [self._reply(TokenInfo, t)
                for t in self._json("GET", self._service_path(name, "tokens"))]

    def revoke_token(self, name: str, token_id: str) -> None:
        self._json("DELETE", self._service_path(name, "tokens", token_id))
