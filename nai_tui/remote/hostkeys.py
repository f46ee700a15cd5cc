"""SSH host keys: known_hosts files, their checks, and recording a server's key.

Keys are checked against the user's known_hosts files (plain, hashed, wildcard and
negated patterns) and nai's own file, never auto-added: an unknown key raises
`UnknownHostKey` (with `nai server trust SERVER` to record it), a changed one
`HostKeyChanged`. Resolving a target and opening the (ProxyJump) hops live here too,
as fetching a host key needs them without a login; `nai_tui.remote.ssh` builds on them.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paramiko
from fabric import Config, Connection
from paramiko.hostkeys import HostKeyEntry, HostKeys, InvalidHostKey
from paramiko.ssh_exception import NoValidConnectionsError

from nai_server.protocol import ConnectionFailed
from nai_tui.remote.target import SshTarget as SshTarget

PREFERRED_CIPHER = "aes128-gcm@openssh.com"  # ~25-30 % faster than aes-ctr on loopback


class UnknownHostKey(ConnectionFailed):
    """The server's host key is in no known_hosts file; the user must trust it first."""

    def __init__(self, message: str, *, host: str, keytype: str, fingerprint: str) -> None:
        super().__init__(message)
        self.host, self.keytype, self.fingerprint = host, keytype, fingerprint


class HostKeyChanged(ConnectionFailed):
    """The server shows another key than the one on record: maybe a man in the middle."""


class LoginFailed(ConnectionFailed):
    """SSH refused the login: no key it accepts (`nai` exits with status 4 for it)."""


# --- targets and settings --------------------------------------------------------------


def resolve(target: str | SshTarget, ssh_config: Path | None = None,
            identity_file: Path | None = None) -> Connection:
    """An unopened fabric Connection with HostName, Port, User, keys, ProxyJump applied."""
    parsed = target if isinstance(target, SshTarget) else SshTarget.parse(target)
    config = Config(runtime_ssh_path=str(ssh_config)) if ssh_config else Config()
    kwargs: dict[str, Any] = {}
    if identity_file is not None:
        kwargs["key_filename"] = [str(identity_file)]
    return Connection(parsed.host, user=parsed.user, port=parsed.port, config=config,
                      connect_kwargs=kwargs)


def host_key_name(host: str, port: int) -> str:
    """The name known_hosts files use: `host` on port 22, `[host]:port` elsewhere."""
    return host if int(port) == 22 else f"[{host}]:{port}"


def _hops(conn: Connection) -> list[Connection]:
    """The connection and its ProxyJump gateways, innermost first."""
    chain = [conn]
    while isinstance(chain[-1].gateway, Connection):
        chain.append(chain[-1].gateway)
    return chain


# --- host keys -------------------------------------------------------------------------


def fingerprint(key: paramiko.PKey) -> str:
    """SHA256 fingerprint as OpenSSH prints it (`SHA256:` + base64 without padding)."""
    return str(key.fingerprint)


def same_fingerprint(given: str, actual: str) -> bool:
    """Whether a fingerprint someone typed or pasted names the key `actual` names (an
    OpenSSH SHA256 fingerprint): the `SHA256:` prefix and base64 padding are optional."""
    def bare(text: str) -> str:
        text = text.strip()
        if text[:7].upper() == "SHA256:":
            text = text[7:]
        return text.rstrip("=")

    return bare(given) == bare(actual)


class KnownHosts:
    """Entries of several known_hosts files (plain, hashed and wildcard host patterns)."""

    def __init__(self, paths: list[Path]) -> None:
        self.entries: list[HostKeyEntry] = []
        for path in paths:
            try:
                lines = path.expanduser().read_text().splitlines()
            except OSError:
                continue
            for lineno, line in enumerate(lines, 1):
                line = line.strip()
                if not line or line.startswith(("#", "@")):  # markers: not supported
                    continue
                try:
                    entry = HostKeyEntry.from_line(line, lineno)
                except (InvalidHostKey, paramiko.SSHException, ValueError):
                    entry = None
                if entry is not None:
                    self.entries.append(entry)

    def keys_for(self, name: str) -> list[paramiko.PKey]:
        return [e.key for e in self.entries if _matches(name, e.hostnames)]


def _matches(name: str, patterns: list[str]) -> bool:
    hit = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern[1:] if negated else pattern
        if pattern.startswith("|1|"):
            found = HostKeys.hash_host(name, pattern) == pattern
        else:
            found = _glob(pattern).fullmatch(name.lower()) is not None
        if found and negated:
            return False
        hit = hit or found
    return hit


def _glob(pattern: str) -> re.Pattern[str]:
    """OpenSSH host patterns: only `*` and `?` are special (`[host]:port` is literal)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern.lower()))


def known_hosts_files(conn: Connection, extra: Path | None) -> list[Path]:
    """The user's known_hosts files (UserKnownHostsFile or its default), system's, nai's."""
    user_files = str(conn.ssh_config.get("userknownhostsfile",
                                         "~/.ssh/known_hosts ~/.ssh/known_hosts2"))
    paths = [Path(p).expanduser() for p in user_files.split()]
    paths.append(Path(str(conn.ssh_config.get("globalknownhostsfile",
                                              "/etc/ssh/ssh_known_hosts"))))
    if extra is not None:
        paths.append(extra)
    return paths


def unknown_host_key(server: str, name: str, keytype: str, fp: str,
                     trust_with: str | None = None) -> UnknownHostKey:
    """The refusal of a key on no record, with its fingerprint and how to trust it."""
    return UnknownHostKey(
        f"{server}: the SSH host key of {name} is not known:\n"
        f"  {keytype} {fp}\n"
        f"If it matches the server's key (its admin can show it with "
        f"`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`), trust it with:\n"
        f"  {trust_with or f'nai server trust {server} --fingerprint {fp}'}",
        host=name, keytype=keytype, fingerprint=fp)


def check_host_key(known: KnownHosts, name: str, key: paramiko.PKey, server: str,
                   trust_with: str | None = None) -> None:
    """Accept a key on record; refuse an unknown or a changed one, saying what to do.

    `trust_with` is the command that records the key (`nai server trust SERVER`).
    """
    trust_with = trust_with or f"nai server trust {server}"
    keys = known.keys_for(name)
    if any(k.asbytes() == key.asbytes() for k in keys):
        return
    keytype, fp = key.get_name(), fingerprint(key)
    if not keys:
        raise unknown_host_key(server, name, keytype, fp, trust_with)
    on_record = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in keys)
    raise HostKeyChanged(
        f"{server}: WARNING: THE SSH HOST KEY OF {name} HAS CHANGED. Refusing to connect.\n"
        f"Someone could be intercepting the connection (man in the middle), or the server "
        f"was reinstalled.\n"
        f"  offered:   {keytype} {fp}\n"
        f"  on record: {on_record}\n"
        f"Check the new key with the server's admin; only then remove the old entry "
        f"(ssh-keygen -R '{name}', and from nai's known_hosts) and run `{trust_with}`.")


class _VerifyHostKey(paramiko.MissingHostKeyPolicy):
    """Called for every key (the client's own key stores stay empty): see check_host_key."""

    def __init__(self, known: KnownHosts, server: str, trust_with: str | None) -> None:
        self.known, self.server, self.trust_with = known, server, trust_with

    def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
        check_host_key(self.known, hostname, key, self.server, self.trust_with)


def _transport_factory(known_types: set[str]) -> Callable[..., paramiko.Transport]:
    """Transports that prefer aes128-gcm and the host key types already on record."""
    wanted: list[str] = []
    for t in sorted(known_types):
        wanted += ["rsa-sha2-512", "rsa-sha2-256"] if t == "ssh-rsa" else [t]

    def make(sock: Any, disabled_algorithms: Any = None) -> paramiko.Transport:
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            # A request goes out as several small SSH packets: with Nagle's algorithm
            # each after the first waits for the server's delayed ACK (~40 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock, disabled_algorithms=disabled_algorithms)
        opts = transport.get_security_options()
        opts.ciphers = _prefer(opts.ciphers, [PREFERRED_CIPHER])
        opts.key_types = _prefer(opts.key_types, wanted)
        return transport

    return make


def _prefer(current: Sequence[str], first: list[str]) -> tuple[str, ...]:
    head = [x for x in first if x in current]
    return (*head, *(x for x in current if x not in head))


def secure_hops(conn: Connection, server: str, known_hosts: Path | None, timeout: float) -> None:
    """Replace fabric's auto-add policy on every hop; set timeouts and algorithms."""
    for depth, hop in enumerate(_hops(conn)):
        known = KnownHosts(known_hosts_files(hop, known_hosts))
        name = host_key_name(hop.host, hop.port)
        # `nai server trust` records the server's own key; a jump host is the user's
        # ssh business (its key goes to ~/.ssh/known_hosts).
        trust_with = None if depth == 0 else f"ssh {hop.original_host}  (answer yes)"
        hop.client.set_missing_host_key_policy(_VerifyHostKey(known, server, trust_with))
        hop.connect_timeout = timeout  # fabric rounds ConnectTimeout down to an int
        hop.connect_kwargs["banner_timeout"] = timeout
        hop.connect_kwargs["transport_factory"] = _transport_factory(
            {k.get_name() for k in known.keys_for(name)})


def connect_error(exc: BaseException, conn: Connection, server: str,
                  timeout: float) -> ConnectionFailed:
    """Say what failed, in words, for an exception from opening an SSH connection."""
    where = f"{conn.host}:{conn.port}"
    if isinstance(exc, ConnectionFailed):
        return exc
    if isinstance(exc, socket.gaierror):
        return ConnectionFailed(f"{server}: cannot resolve host {conn.host} ({exc.strerror})")
    if isinstance(exc, NoValidConnectionsError):
        codes = {getattr(e, "errno", None) for e in exc.errors.values()}
        if codes == {errno.ECONNREFUSED}:
            return ConnectionFailed(f"{server}: nothing listens on {where}; is sshd running?")
        return ConnectionFailed(f"{server}: cannot reach {where} ({exc})")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionFailed(f"{server}: nothing listens on {where}; is sshd running?")
    if isinstance(exc, TimeoutError):
        return ConnectionFailed(f"{server}: no answer from {where} within {timeout:g} s "
                                f"(connect timeout); is the host up and the port right?")
    if isinstance(exc, paramiko.AuthenticationException):
        return LoginFailed(
            f"{server}: SSH login as {conn.user}@{conn.host} failed: no accepted key "
            f"({exc}). Load your key into the agent with ssh-add, or name it with "
            f"IdentityFile for this host in ~/.ssh/config (and check that its public key "
            f"is in ~/.ssh/authorized_keys on the server).")
    if isinstance(exc, paramiko.BadHostKeyException):  # not expected: keys are checked above
        return HostKeyChanged(f"{server}: the SSH host key of {conn.host} has changed ({exc})")
    if isinstance(exc, paramiko.SSHException) and "banner" in str(exc):
        return ConnectionFailed(f"{server}: {where} does not answer like an SSH server ({exc})")
    if isinstance(exc, (paramiko.SSHException, OSError, EOFError)):
        return ConnectionFailed(f"{server}: SSH connection to {where} failed: {exc}")
    return ConnectionFailed(f"{server}: SSH connection to {where} failed: {exc!r}")


def fetch_host_key(target: str, *, ssh_config: Path | None = None,
                   known_hosts: Path | None = None, connect_timeout: float = 10,
                   name: str | None = None) -> tuple[str, paramiko.PKey, str]:
    """The key the server shows now, as (keytype, key, SHA256 fingerprint); no login.

    ProxyJump gateways on the way are still checked against the known keys.
    """
    server = name or target
    conn = resolve(target, ssh_config)
    secure_hops(conn, server, known_hosts, connect_timeout)
    transport: paramiko.Transport | None = None
    try:
        if conn.gateway:
            sock = conn.open_gateway()
        else:
            sock = socket.create_connection((conn.host, int(conn.port)), connect_timeout)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = connect_timeout
        transport.start_client(timeout=connect_timeout)
        key = transport.get_remote_server_key()
    except Exception as exc:
        raise connect_error(exc, conn, server, connect_timeout) from exc
    finally:
        if transport is not None:
            transport.close()
        close_hops(conn)
    return key.get_name(), key, fingerprint(key)


def trust_host_key(target: str, known_hosts_path: Path, *, key: paramiko.PKey | None = None,
                   hashed: bool = False, ssh_config: Path | None = None,
                   connect_timeout: float = 10) -> tuple[str, str]:
    """Record the server's key (the one given, or the one it shows now) in nai's file.

    Older entries for the same host in that file are replaced. Returns (keytype,
    fingerprint) of the key written.
    """
    conn = resolve(target, ssh_config)
    if key is None:
        _, key, _ = fetch_host_key(target, ssh_config=ssh_config, known_hosts=known_hosts_path,
                                   connect_timeout=connect_timeout)
    name = host_key_name(conn.host, conn.port)
    path = known_hosts_path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        kept = [line for line in path.read_text().splitlines()
                if not _entry_names(line) or not _matches(name, _entry_names(line))]
    except FileNotFoundError:
        kept = []
    host_field = HostKeys.hash_host(name) if hashed else name
    kept.append(f"{host_field} {key.get_name()} {key.get_base64()}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(kept) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return key.get_name(), fingerprint(key)


def _entry_names(line: str) -> list[str]:
    line = line.strip()
    if not line or line.startswith(("#", "@")):
        return []
    return line.split()[0].split(",")


def close_hops(conn: Connection) -> None:
    """Close every hop of `conn`, the half-connected ones included."""
    # fabric's close() skips a client whose connect() failed half way (its transport
    # thread would live on): close the paramiko clients themselves.
    for hop in _hops(conn):
        hop.close()
        hop.client.close()
