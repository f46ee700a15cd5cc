"""HTTP over one paramiko SSH connection: every HTTP connection is an exec channel.

paramiko cannot forward to a remote unix socket (issue #544), so each channel runs a
relay on the server (`nai-server dial-stdio`, as docker does with `docker system
dial-stdio`) and httpcore speaks HTTP/1.1 over the channel. Host settings come from
fabric and `~/.ssh/config`; host keys are checked by `nai_tui.remote.hostkeys`, never auto-added.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpcore
import paramiko
from fabric import Connection

from nai_server.protocol import ConnectionFailed
from nai_tui.remote.backoff import Backoff, Policy
from nai_tui.remote.hostkeys import SshTarget, close_hops, connect_error, resolve, secure_hops

DEFAULT_REMOTE_COMMAND = "nai-server dial-stdio"
# sshd refuses channels past MaxSessions; slots free up within milliseconds as closed
# channels are torn down, so ask again soon, until the request's own deadline.
SESSION_SLOTS = Policy(first=0.01, cap=0.2, retry_on=(paramiko.ChannelException,))


# --- the shared connection and its channels --------------------------------------------


class SshSession:
    """One SSH connection shared by all channels; opened on first use and reopened
    after it dropped."""

    def __init__(self, target: str, *, name: str | None = None,
                 known_hosts: Path | None = None, connect_timeout: float = 10,
                 identity_file: Path | None = None, ssh_config: Path | None = None) -> None:
        self.target = SshTarget.parse(target)
        self.name = name or target
        self.known_hosts = known_hosts
        self.connect_timeout = connect_timeout
        self.identity_file = identity_file
        self.ssh_config = ssh_config
        self._lock = threading.Lock()
        self._conn: Connection | None = None

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and conn.transport is not None and conn.transport.is_active()

    @property
    def where(self) -> str:
        conn = self._conn
        return f"{conn.user}@{conn.host}" if conn is not None else self.target.host

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            if self.connected:
                assert self._conn is not None
                current: paramiko.Transport = self._conn.transport
                return current
            self._close_locked()
            conn = resolve(self.target, self.ssh_config, self.identity_file)
            secure_hops(conn, self.name, self.known_hosts, self.connect_timeout)
            try:
                conn.open()
            except Exception as exc:
                close_hops(conn)
                raise connect_error(exc, conn, self.name, self.connect_timeout) from exc
            conn.transport.set_keepalive(30)
            self._conn = conn
            transport: paramiko.Transport = conn.transport
            return transport

    def exec(self, command: str, timeout: float | None = None) -> paramiko.Channel:
        """A new channel running `command`; waits while sshd's session slots are full."""
        limit = timeout or self.connect_timeout
        deadline = time.monotonic() + limit
        backoff = Backoff(SESSION_SLOTS.replace(deadline=limit))
        reconnected = False
        while True:
            transport = self._transport()
            remaining = max(deadline - time.monotonic(), 0.1)
            try:
                channel = transport.open_session(timeout=remaining)
                channel.exec_command(command)
                return channel
            except paramiko.ChannelException as exc:
                # MaxSessions reached: slots free up as closed channels are torn down.
                if not backoff.pause(exc):
                    raise ConnectionFailed(
                        f"{self.name}: {self.where} refuses more SSH sessions ({exc}); "
                        f"raise MaxSessions in sshd_config or use fewer connections") from exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if transport.is_active() or reconnected:
                    raise ConnectionFailed(
                        f"{self.name}: cannot open an SSH channel on {self.where}: {exc}"
                    ) from exc
                reconnected = True  # the connection dropped under us: open a new one

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._conn is not None:
            close_hops(self._conn)
            self._conn = None



def relay_failure(server: str, where: str, command: str, status: int | None,
                  stderr: str) -> ConnectionFailed | None:
    """Why the relay ended before answering, or None when it looks like a normal close."""
    said = stderr.strip()
    if status == 127 or "not found" in said.lower():
        return ConnectionFailed(
            f"{server}: nai-server is not installed on {where} (or not on the PATH of "
            f"non-interactive SSH sessions): `{command}` failed"
            + (f": {said}" if said else "") +
            ". Install it there (pip install nothingai), or set the server's remote "
            "command to the full path of nai-server.")
    if said or status not in (None, 0):
        return ConnectionFailed(
            f"{server}: `{command}` on {where} ended with exit status {status}"
            + (f": {said}" if said else ""))
    return None


class ChannelStream(httpcore.NetworkStream):
    """An httpcore stream over one exec channel; the relay's stderr is kept for errors."""

    STDERR_LIMIT = 4096

    def __init__(self, channel: paramiko.Channel, failure: Callable[[int | None, str],
                                                                    ConnectionFailed | None]):
        self._channel = channel
        self._failure = failure
        self._answered = False
        self._stderr = bytearray()

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._channel.settimeout(timeout)
        try:
            data = self._channel.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc) or "read timed out") from exc
        except OSError as exc:
            raise self._explain() or httpcore.ReadError(str(exc)) from exc
        if data:
            self._answered = True
            return bytes(data)
        if not self._answered and (failure := self._explain()):
            raise failure
        return b""

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._channel.settimeout(timeout)
        # Not Channel.sendall: it slices the bytes it has left after every 32 KiB
        # packet, copying a 1 MiB chunk sixteen times over. A view slices for free.
        view = memoryview(buffer)
        try:
            while view:
                sent = self._channel.send(view)  # type: ignore[arg-type]  # takes any buffer
                if not sent:
                    raise httpcore.WriteError("the SSH channel was closed")
                view = view[sent:]
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc) or "write timed out") from exc
        except OSError as exc:
            raise self._explain() or httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._channel.close()

    def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise NotImplementedError("TLS over an SSH channel is not needed")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # data or EOF while idle: the pool drops this channel
            ch = self._channel
            return ch.closed or ch.eof_received or ch.recv_ready()
        return None

    def _explain(self) -> ConnectionFailed | None:
        """After the channel ended before answering: the exit status and stderr, read."""
        ch = self._channel
        ch.status_event.wait(2.0)  # exit-status comes right after EOF
        while ch.recv_stderr_ready():
            self._stderr += ch.recv_stderr(self.STDERR_LIMIT)
            del self._stderr[: -self.STDERR_LIMIT]
        status = ch.exit_status if ch.exit_status_ready() else None
        return self._failure(status, self._stderr.decode(errors="replace"))


class SshNetworkBackend(httpcore.NetworkBackend):
    """`connect_tcp` opens a new exec channel of the relay on the shared connection."""

    def __init__(self, session: SshSession, command: str = DEFAULT_REMOTE_COMMAND) -> None:
        self.session = session
        self.command = command

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        channel = self.session.exec(self.command, timeout)
        where = self.session.where

        def failure(status: int | None, stderr: str) -> ConnectionFailed | None:
            return relay_failure(self.session.name, where, self.command, status, stderr)

        return ChannelStream(channel, failure)

    def close(self) -> None:
        self.session.close()
