"""Build the `httpx.Client` that reaches one nai server (see DESIGN.md §5).

- `local`: the daemon's unix socket on this machine.
- `ssh` (default for remote servers): one paramiko connection, an exec channel of
  `nai-server dial-stdio` per HTTP connection (`nai_tui.remote.ssh`).
- `openssh`: the system `ssh` binary per HTTP connection, multiplexed over a
  ControlMaster that outlives the client by ControlPersist (60 s) so the next `nai`
  command starts fast.
"""

from __future__ import annotations

import os
import queue
import re
import select
import stat
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import httpcore
import httpx

from nai_server.protocol import ConnectionFailed, user_dir
from nai_tui.remote.client import BASE_URL, DEFAULT_READ_TIMEOUT, local_http_client
from nai_tui.remote.hostkeys import (
    PREFERRED_CIPHER,
    HostKeyChanged,
    LoginFailed,
    SshTarget,
    UnknownHostKey,
    fetch_host_key,
    same_fingerprint,
    trust_host_key,
    unknown_host_key,
)
from nai_tui.remote.ssh import DEFAULT_REMOTE_COMMAND, SshNetworkBackend, SshSession, relay_failure

__all__ = [
    "BackendTransport",
    "HostKeyChanged",
    "OpenSshBackend",
    "UnknownHostKey",
    "fetch_host_key",
    "http_client_for",
    "local_http_client",
    "same_fingerprint",
    "ssh_transport",
    "trust_host_key",
]

# sshd's MaxSessions defaults to 10 channels per connection; leave room for churn.
MAX_CHANNELS = 8
# Below uvicorn's 5 s keep-alive, so the pool drops a channel before the server does.
KEEPALIVE_EXPIRY = 4.0
RETRYABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Refusals that another try would only repeat.
FINAL_FAILURES = (UnknownHostKey, HostKeyChanged, LoginFailed)


def http_client_for(url_or_alias: str, *, transport: str = "ssh",
                    known_hosts: Path | None = None,
                    remote_command: str = DEFAULT_REMOTE_COMMAND,
                    connect_timeout: float = 10, identity_file: Path | None = None,
                    ssh_config: Path | None = None, name: str | None = None,
                    read_timeout: float | None = DEFAULT_READ_TIMEOUT,
                    ssh_options: Sequence[str] = (), runtime_dir: Path | None = None,
                    max_connections: int = MAX_CHANNELS) -> httpx.Client:
    """A client for the server at `url_or_alias` (`ssh://user@host:port`, `user@host`,
    an ssh-config alias, or `unix:///path/to/nai.sock`).

    `name` is the server's name in nai's settings, used in messages
    (`nai server trust NAME`). `ssh_options` go to the system ssh (openssh only).
    Closing the client closes the SSH connection.
    """
    timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
    if url_or_alias.startswith("unix:"):
        return local_http_client(Path(url_or_alias.removeprefix("unix:").removeprefix("//")),
                                 timeout=read_timeout or DEFAULT_READ_TIMEOUT,
                                 connect_timeout=connect_timeout)
    http_transport: httpx.BaseTransport
    if transport == "ssh":
        http_transport = ssh_transport(
            url_or_alias, name=name, known_hosts=known_hosts, remote_command=remote_command,
            connect_timeout=connect_timeout, identity_file=identity_file,
            ssh_config=ssh_config, max_connections=max_connections)
    elif transport == "openssh":
        backend = OpenSshBackend(
            url_or_alias, name=name, known_hosts=known_hosts, remote_command=remote_command,
            connect_timeout=connect_timeout, identity_file=identity_file,
            ssh_config=ssh_config, ssh_options=ssh_options, runtime_dir=runtime_dir)
        http_transport = BackendTransport(backend, max_connections=max_connections)
    else:
        raise ValueError(f"unknown transport {transport!r} (expected ssh or openssh)")
    return httpx.Client(transport=http_transport, base_url=BASE_URL, timeout=timeout)


# --- httpx over a network backend -----------------------------------------------------


class _Dialer(httpcore.NetworkBackend):
    """A backend's streams, some dialed ahead of need (`prepare`): a new SSH channel
    runs `nai-server dial-stdio` on the server, a new process that takes a while to
    start, and a push that asks and uploads at once waited for it mid-way."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self._ready: queue.SimpleQueue[httpcore.NetworkStream | BaseException] = (
            queue.SimpleQueue())
        self._lock = threading.Lock()
        self._dialing = 0  # dials under way whose stream nobody has taken yet
        self._closed = False

    def prepare(self, count: int) -> None:
        with self._lock:
            self._dialing += count
        for _ in range(count):
            threading.Thread(target=self._dial_ahead, name="nai-dial", daemon=True).start()

    def _dial_ahead(self) -> None:
        try:
            stream: httpcore.NetworkStream | BaseException = self.backend.connect_tcp("nai", 80)
        except BaseException as exc:  # the request that takes it dials again
            stream = exc
        self._ready.put(stream)
        if self._closed:
            self._drain()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        with self._lock:
            ahead = self._dialing > 0
            if ahead:
                self._dialing -= 1
        if ahead:  # one is on its way: sooner there than a new one
            stream = self._ready.get()
            if not isinstance(stream, BaseException):
                return stream
        stream = self.backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return stream  # type: ignore[no-any-return]

    def close(self) -> None:
        self._closed = True
        self._drain()
        self.backend.close()

    def _drain(self) -> None:
        while True:
            try:
                stream = self._ready.get_nowait()
            except queue.Empty:
                return
            if not isinstance(stream, BaseException):
                stream.close()


class BackendTransport(httpx.HTTPTransport):
    """httpx over any httpcore NetworkBackend, with at most `max_connections` streams.

    A GET that fails because the connection underneath dropped is sent once more on a
    fresh one.
    """

    def __init__(self, backend: Any, *, max_connections: int = MAX_CHANNELS) -> None:
        super().__init__(verify=False)
        self.backend = backend
        self._dialer = _Dialer(backend)
        self._pool = httpcore.ConnectionPool(
            network_backend=self._dialer, max_connections=max_connections,
            max_keepalive_connections=max_connections, keepalive_expiry=KEEPALIVE_EXPIRY)

    def prepare(self, count: int) -> None:
        """Dial `count` more connections in the background, for requests about to run
        side by side with the ones already open."""
        self._dialer.prepare(count)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            # A kept-alive channel can die just as a request goes out on it (the relay
            # or ssh ended it): an idempotent request is sent once more, on a new one.
            if request.method not in RETRYABLE_METHODS:
                raise
            return super().handle_request(request)
        except ConnectionFailed as exc:
            # A connection that ended before any answer for a reason that is no verdict
            # on the server (a busy ControlMaster or sshd refusing one more session, a
            # relay ended under load) gets one more try for an idempotent request. A
            # host key or login refusal would only repeat itself: it is raised at once.
            if request.method not in RETRYABLE_METHODS or isinstance(exc, FINAL_FAILURES):
                raise
            return super().handle_request(request)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._dialer.close()


def ssh_transport(target: str, *, name: str | None = None, known_hosts: Path | None = None,
                  remote_command: str = DEFAULT_REMOTE_COMMAND, connect_timeout: float = 10,
                  identity_file: Path | None = None, ssh_config: Path | None = None,
                  max_connections: int = MAX_CHANNELS) -> BackendTransport:
    """An httpx transport that reaches the daemon through paramiko exec channels."""
    session = SshSession(target, name=name, known_hosts=known_hosts,
                         connect_timeout=connect_timeout, identity_file=identity_file,
                         ssh_config=ssh_config)
    backend = SshNetworkBackend(session, remote_command)
    return BackendTransport(backend, max_connections=max_connections)


# --- the system ssh --------------------------------------------------------------------


def runtime_dir_default() -> Path | None:
    """A private directory for ControlMaster sockets, or None when none is safe."""
    path = user_dir("runtime")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError:
        return None
    # Someone else's directory in /tmp would let them hijack the master connection.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return path


class OpenSshBackend(httpcore.NetworkBackend):
    """`connect_tcp` starts `ssh -T TARGET nai-server dial-stdio` and speaks over its pipes."""

    def __init__(self, target: str, *, name: str | None = None,
                 known_hosts: Path | None = None,
                 remote_command: str = DEFAULT_REMOTE_COMMAND, connect_timeout: float = 10,
                 identity_file: Path | None = None, ssh_config: Path | None = None,
                 ssh_options: Sequence[str] = (), runtime_dir: Path | None = None,
                 ssh_binary: str = "ssh") -> None:
        self.target = SshTarget.parse(target)
        self.name = name or target
        self.command = remote_command
        self.connect_timeout = connect_timeout
        runtime = runtime_dir if runtime_dir is not None else runtime_dir_default()
        # Options given first win over ours: ssh keeps the first value it reads.
        argv = [ssh_binary, "-T", *ssh_options, "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={max(1, round(connect_timeout))}"]
        if runtime is not None:
            runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
            argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={runtime}/ssh-%C",
                     "-o", "ControlPersist=60"]
        if known_hosts is not None:
            files = ["~/.ssh/known_hosts", "~/.ssh/known_hosts2", str(known_hosts)]
            argv += ["-o", "UserKnownHostsFile=" + " ".join(f'"{f}"' for f in files)]
        if ssh_config is not None:
            argv += ["-F", str(ssh_config)]
        if identity_file is not None:
            argv += ["-i", str(identity_file)]
        if self.target.port is not None:
            argv += ["-p", str(self.target.port)]
        if self.target.user is not None:
            argv += ["-l", self.target.user]
        self.base_argv = [*argv, "--", self.target.host]
        self._user_options = list(ssh_options)
        self._cipher_checked = False

    def prefer_fast_cipher(self) -> None:
        """Put AES-GCM first in the cipher list (it runs on AES-NI: bulk uploads cost
        ssh and sshd a third less CPU than chacha20), unless the user chose ciphers
        in ~/.ssh/config or the options; asked of `ssh -G` once."""
        if self._cipher_checked:
            return
        self._cipher_checked = True
        if any("cipher" in opt.lower() or opt == "-c" for opt in self._user_options):
            return
        mine = _ssh_ciphers([*self.base_argv[:-2], "-G", "--", self.target.host])
        default = _ssh_ciphers([self.base_argv[0], "-G", "-F", "/dev/null", "--", "nai"])
        if mine is not None and mine == default and PREFERRED_CIPHER in mine.split(","):
            self.base_argv[-2:-2] = ["-o", f"Ciphers=^{PREFERRED_CIPHER}"]

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        self.prefer_fast_cipher()
        try:
            proc = subprocess.Popen(
                [*self.base_argv, self.command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise ConnectionFailed(f"{self.name}: cannot run ssh: {exc}") from exc
        return ProcessStream(proc, self._failure)

    def _failure(self, status: int | None, stderr: str) -> ConnectionFailed | None:
        failure = openssh_failure(self.name, self.target.host, self.command, status, stderr)
        if isinstance(failure, UnknownHostKey) and (shown := self.probe_host_key()):
            return unknown_host_key(self.name, failure.host, *shown)
        return failure

    def probe_host_key(self) -> tuple[str, str] | None:
        """(keytype, fingerprint) of the key the server shows, read from `ssh -v` with
        every authentication method off, so no login happens."""
        probe = ["-v", "-o", "ControlMaster=no", "-o", "ControlPath=none",
                 "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                 "-o", "GlobalKnownHostsFile=/dev/null", "-o", "PubkeyAuthentication=no",
                 "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
                 "-o", "HostbasedAuthentication=no", "-o", "GSSAPIAuthentication=no"]
        try:
            done = subprocess.run([self.base_argv[0], *probe, *self.base_argv[1:], "true"],
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                  timeout=self.connect_timeout + 10, start_new_session=True)
        except (OSError, subprocess.TimeoutExpired):
            return None
        match = _SERVER_KEY.search(done.stderr)
        return (match.group(1), match.group(2)) if match else None

    def exit_master(self) -> None:
        """Stop the ControlMaster connection now instead of after ControlPersist."""
        subprocess.run([*self.base_argv[:-2], "-O", "exit", "--", self.target.host],
                       capture_output=True, timeout=30, start_new_session=True)

    def close(self) -> None:
        """Nothing to do: the master, if any, ends by itself after ControlPersist."""


def _ssh_ciphers(argv: list[str]) -> str | None:
    """The `ciphers` line of `ssh -G` (the configuration ssh would use), if it runs."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=10, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "ciphers":
            return value
    return None


_NO_HOST_KEY = re.compile(r"No (\S+) host key is known for (\S+)")
_SERVER_KEY = re.compile(r"Server host key: (\S+) (SHA256:\S+)")


def openssh_failure(server: str, host: str, command: str, status: int | None,
                    stderr: str) -> ConnectionFailed | None:
    """Map what `ssh` printed on stderr (exit status 255) to a message in words."""
    said = "\n".join(line for line in stderr.replace("\r", "").splitlines()
                     if line.strip() and not line.startswith("@@@"))
    if status != 255:
        return relay_failure(server, host, command, status, said)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or "POSSIBLE DNS SPOOFING" in stderr:
        return HostKeyChanged(
            f"{server}: WARNING: THE SSH HOST KEY OF {host} HAS CHANGED. Refusing to "
            f"connect.\nSomeone could be intercepting the connection (man in the middle), "
            f"or the server was reinstalled. ssh said:\n{said}\nCheck the new key with the "
            f"server's admin before you remove the old entry and run "
            f"`nai server trust {server}`.")
    if "Host key verification failed" in said:
        match = _NO_HOST_KEY.search(said)
        keytype, name = (match.group(1), match.group(2)) if match else ("", host)
        return UnknownHostKey(
            f"{server}: the SSH host key of {name} is not known"
            + (f" ({keytype})" if keytype else "") +
            f". Run `nai server trust {server}` to see its fingerprint and trust it.",
            host=name, keytype=keytype, fingerprint="")
    if "Could not resolve hostname" in said:
        return ConnectionFailed(f"{server}: cannot resolve host {host} ({said})")
    if "Connection refused" in said:
        return ConnectionFailed(f"{server}: nothing listens on {host}; is sshd running? "
                                f"({said})")
    if "Permission denied" in said:
        return LoginFailed(
            f"{server}: SSH login to {host} failed: no accepted key ({said}). Load your key "
            f"into the agent with ssh-add, or name it with IdentityFile in ~/.ssh/config.")
    if "timed out" in said:
        return ConnectionFailed(f"{server}: no answer from {host} in time ({said})")
    return ConnectionFailed(f"{server}: ssh to {host} failed: {said or 'exit status 255'}")


class ProcessStream(httpcore.NetworkStream):
    """An httpcore stream over a subprocess's stdin/stdout; stderr is kept for errors."""

    STDERR_LIMIT = 8192

    def __init__(self, proc: subprocess.Popen[bytes], failure: Any) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._proc = proc
        self._failure = failure
        self._in, self._out = proc.stdin, proc.stdout
        os.set_blocking(self._in.fileno(), False)
        self._answered = False
        self._stderr = bytearray()
        self._stderr_done = threading.Thread(target=self._drain, args=(proc.stderr,),
                                             daemon=True)
        self._stderr_done.start()

    def _drain(self, pipe: IO[bytes]) -> None:
        for chunk in iter(lambda: os.read(pipe.fileno(), 4096), b""):
            self._stderr += chunk
            del self._stderr[: -self.STDERR_LIMIT]
        pipe.close()

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            fd = self._out.fileno()
        except ValueError:  # closed under us: the connection is gone
            raise httpcore.ReadError("the ssh connection was closed") from None
        if not _ready(fd, select.POLLIN, timeout):
            raise httpcore.ReadTimeout("no data from ssh in time")
        try:
            data = os.read(fd, max_bytes)
        except OSError as exc:
            raise self._explain() or httpcore.ReadError(str(exc)) from exc
        if data:
            self._answered = True
            return data
        if not self._answered and (failure := self._explain()):
            raise failure
        return b""

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self._in.fileno()
        except ValueError:
            raise httpcore.WriteError("the ssh connection was closed") from None
        view = memoryview(buffer)
        deadline = None if timeout is None else time.monotonic() + timeout
        while view:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            if not _ready(self._in.fileno(), select.POLLOUT, remaining):
                raise httpcore.WriteTimeout("ssh did not take the data in time")
            try:
                view = view[os.write(self._in.fileno(), view):]
            except BlockingIOError:
                continue
            except OSError as exc:  # EPIPE: ssh has exited
                raise self._explain() or httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        for pipe in (self._in, self._out):
            try:
                pipe.close()
            except OSError:
                pass
        if self._proc.poll() is None:
            self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise NotImplementedError("TLS over ssh is not needed")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return self._proc.poll() is not None or _ready(self._out.fileno(), select.POLLIN, 0)
        return None

    def _explain(self) -> ConnectionFailed | None:
        try:
            status: int | None = self._proc.wait(5)
        except subprocess.TimeoutExpired:
            status = None
        self._stderr_done.join(2)
        return self._failure(status, self._stderr.decode(errors="replace"))  # type: ignore[no-any-return]


def _ready(fd: int, event: int, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(fd, event)
    return bool(poller.poll(None if timeout is None else timeout * 1000))
