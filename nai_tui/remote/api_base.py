"""`ApiBase`: the plumbing every call of `ServerClient` goes through: the version check,
sending, reading answers as protocol models, streaming, and errors as the `NaiError` tree.
The calls themselves are in nai_tui.remote.client and its sibling modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from pydantic import ValidationError

from nai_server.protocol import (
    API_VERSION,
    ConnectionFailed,
    NaiError,
    VersionInfo,
    VersionMismatch,
    error_from_body,
)
from nai_tui.remote.replies import M, read_reply, unreadable

BASE_URL = "http://nai"
DEFAULT_READ_TIMEOUT = 60.0


class ApiBase:
    """One server's connection: how a call is sent and its answer read."""

    def __init__(self, http: httpx.Client, name: str = "server") -> None:
        self.http = http
        self.name = name
        self._checked = False
        self._server_api: str | None = None  # the server's API version, once asked

    def close(self) -> None:
        self.http.close()

    # --- plumbing ---------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send_raw(method, path, **kwargs)
        if response.status_code >= 400:
            raise response_error(response)
        return response

    def _send_raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response whatever its status; connection problems as ConnectionFailed."""
        if not self._checked and path != "/v1/version":
            self.check_version()
        with connection_errors(self.name):
            return self.http.request(method, path, **kwargs)

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

    def speaks(self, version: str) -> bool:
        """Whether the server's API is at least `version` (a minor version adds routes
        and parameters: an older server ignores a query parameter it does not know)."""
        if not self._checked:
            self.check_version()
        have = tuple(int(p) for p in (self._server_api or "0.0").split(".")[:2])
        return have >= tuple(int(p) for p in version.split(".")[:2])

    def _reply(self, model: type[M], body: Any) -> M:
        """Read an answer as `model`. Fields this client does not know are ignored (a
        newer server may add some); an answer it cannot read says which side to upgrade."""
        try:
            return read_reply(model, body)
        except ValidationError as exc:
            raise VersionMismatch(unreadable(self.name, self._server_api, model, exc)) from None

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
                    raise response_error(response)
                yield from response.iter_bytes(chunk)
        except NaiError:
            raise
        except (httpx.TransportError, OSError) as exc:
            raise ConnectionFailed(f"{self.name}: {exc}") from exc


@contextmanager
def connection_errors(server: str) -> Iterator[None]:
    """httpx's connection problems as ConnectionFailed naming the server; nai's own
    errors (a transport's words for an ssh failure) pass as they are."""
    try:
        yield
    except NaiError:
        raise
    except httpx.TimeoutException as exc:
        raise ConnectionFailed(f"{server}: no answer in time ({exc})") from exc
    except (httpx.TransportError, OSError) as exc:
        raise ConnectionFailed(f"{server}: {exc}") from exc


def response_error(response: httpx.Response) -> NaiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return error_from_body(response.status_code, body)
