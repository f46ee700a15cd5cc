"""The bytes of a pull from the server: a tar of the entries wanted
(`POST /v1/trees/{id}/archive`), and one file from a byte on (`GET /v1/trees/{id}/file`
with `Range: bytes=N-`) to resume a file a broken download had begun."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Generator, Iterator
from typing import Any

import httpx

from nai_server.protocol import ConnectionFailed, NaiError, error_from_body
from nai_tui.remote.client import ServerClient
from nai_tui.sync.hashcache import CHUNK


def archive(client: ServerClient, tree_id: str, paths: list[str]
            ) -> Generator[bytes, None, None]:
    """The tar of exactly `paths` of a tree (POST /v1/trees/{id}/archive), streamed."""
    if not getattr(client, "_checked", False):
        client.check_version()
    try:
        with client.http.stream("POST", f"/v1/trees/{tree_id}/archive", json={"paths": paths},
                                timeout=httpx.Timeout(30.0, read=None)) as response:
            _raise_for(response)
            yield from response.iter_bytes(CHUNK)
    except NaiError:
        raise
    except (httpx.TransportError, OSError) as exc:
        raise ConnectionFailed(f"{client.name}: {exc}") from exc


def _raise_for(response: httpx.Response) -> None:
    """The API's error for a refused streamed request (its body is JSON)."""
    if response.status_code < 400:
        return
    response.read()
    try:
        body = response.json()
    except ValueError:
        body = None
    raise error_from_body(response.status_code, body)


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (what tarfile's stream mode reads)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._left = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            self._left = next(self._chunks, b"")
            if not self._left:
                return 0
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


@contextlib.contextmanager
def file_from(client: ServerClient, tree_id: str, path: str, offset: int
              ) -> Iterator[tuple[int, Iterator[bytes]]]:
    """The file at `path` of a tree from byte `offset` on: (where the bytes start, the
    bytes). The start is 0 when the server sent the whole file instead."""
    if not getattr(client, "_checked", False):
        client.check_version()
    try:
        with client.http.stream("GET", f"/v1/trees/{tree_id}/file", params={"path": path},
                                headers={"Range": f"bytes={offset}-"},
                                timeout=httpx.Timeout(30.0, read=None)) as response:
            _raise_for(response)
            start = offset if response.status_code == 206 else 0
            yield start, _guarded(client, response.iter_bytes(CHUNK))
    except httpx.TransportError as exc:
        raise ConnectionFailed(f"{client.name}: {exc}") from exc


def _guarded(client: ServerClient, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """`chunks`, with a broken connection raised as ConnectionFailed."""
    try:
        yield from chunks
    except (httpx.TransportError, OSError) as exc:
        raise ConnectionFailed(f"{client.name}: {exc}") from exc
