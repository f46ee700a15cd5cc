"""The SSH transports against a real sshd on loopback and the real multi-user daemon,
as real unix users: identity, the channel pool, host keys, errors in words, reconnect."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (  # type: ignore[import-not-found]
    Daemon,
    Sshd,
    UnixUser,
    free_port,
    ssh_keygen,
    wait_for,
)

from nai_server.protocol import ConnectionFailed
from nai_tui.remote.client import ServerClient
from nai_tui.remote.hostkeys import HostKeyChanged, LoginFailed, UnknownHostKey
from nai_tui.remote.transports import (
    fetch_host_key,
    http_client_for,
    local_http_client,
    trust_host_key,
)
from nai_tui.sync import push as sync
from nai_tui.sync.hashcache import HashCache

pytestmark = [pytest.mark.integration, pytest.mark.root]


@dataclass
class Account:
    user: UnixUser
    key: Path


@pytest.fixture
def known_hosts(sshd: Sshd, tmp_path: Path) -> Path:
    """nai's known_hosts file, already holding the test sshd's key."""
    return sshd.write_known_hosts(tmp_path / "nai" / "known_hosts")


@pytest.fixture
def accounts(daemon: Daemon, sshd: Sshd, make_user: Callable[[], UnixUser]) -> list[Account]:
    """Two unix users registered with the daemon, each with a key sshd accepts."""
    made = []
    for _ in range(2):
        user = make_user()
        assert daemon.admin("user", "add", user.name).returncode == 0
        made.append(Account(user, sshd.authorize(user)))
    return made


def relay(daemon: Daemon) -> str:
    return f"nai-server dial-stdio --socket {daemon.socket}"


def client(sshd: Sshd, account: Account, known_hosts: Path, daemon: Daemon,
           **kwargs: object) -> ServerClient:
    options: dict[str, object] = {"known_hosts": known_hosts, "identity_file": account.key,
                                  "remote_command": relay(daemon), "name": "lab"}
    options.update(kwargs)
    return ServerClient(http_client_for(sshd.target(account.user), **options),  # type: ignore[arg-type]
                        name="lab")


def openssh_fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                         check=True).stdout
    return out.split()[1]


def test_each_user_is_seen_as_themselves(daemon, sshd, accounts, known_hosts) -> None:
    for account in accounts:
        with client(sshd, account, known_hosts, daemon) as server:
            me = server.me()
            assert (me.user, me.uid, me.mode) == (account.user.name, account.user.uid,
                                                  "multi-user")


def test_ssh_config_alias_resolves_host_port_user_and_key(daemon, sshd, accounts, known_hosts,
                                                          tmp_path) -> None:
    alice = accounts[0]
    config = tmp_path / "ssh_config"
    config.write_text(f"Host gpu-box\n  HostName 127.0.0.1\n  Port {sshd.port}\n"
                      f"  User {alice.user.name}\n  IdentityFile {alice.key}\n")
    http = http_client_for("gpu-box", ssh_config=config, known_hosts=known_hosts,
                           remote_command=relay(daemon))
    with ServerClient(http, "gpu-box") as server:
        assert server.me().user == alice.user.name


def test_proxyjump_goes_through_the_jump_host(daemon, sshd, accounts, known_hosts,
                                             tmp_path) -> None:
    jump, target = accounts
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host nai-jump\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {jump.user.name}\n"
        f"  IdentityFile {jump.key}\n"
        f"Host nai-target\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {target.user.name}\n"
        f"  IdentityFile {target.key}\n  ProxyJump nai-jump\n")
    http = http_client_for("nai-target", ssh_config=config, known_hosts=known_hosts,
                           remote_command=relay(daemon))
    with ServerClient(http, "nai-target") as server:
        assert server.me().user == target.user.name
        assert sshd.session_pids(jump.user)  # the hop is a login of its own
    wait_for(lambda: not sshd.session_pids(jump.user), what="the jump connection to close")


def test_more_concurrent_requests_than_sessions(daemon, sshd, accounts, known_hosts) -> None:
    with (client(sshd, accounts[0], known_hosts, daemon) as server,
          ThreadPoolExecutor(max_workers=24) as pool):
        users = list(pool.map(lambda _: server.me().user, range(120)))
    assert users == [accounts[0].user.name] * 120


class Dials:
    """Counts the streams a client's transport dials (wrapping the real backend)."""

    def __init__(self, server: ServerClient) -> None:
        self.count = 0
        backend = server.http._transport.backend  # type: ignore[attr-defined]
        real = backend.connect_tcp

        def counting(*args: object, **kwargs: object) -> object:
            self.count += 1
            return real(*args, **kwargs)

        backend.connect_tcp = counting


@pytest.mark.parametrize("transport", ["ssh", "openssh"])
def test_a_connection_dialed_ahead_carries_the_next_request_side_by_side(
        daemon, sshd, accounts, known_hosts, runtime_dir, transport) -> None:
    alice = accounts[0]
    with (client(sshd, alice, known_hosts, daemon) if transport == "ssh" else
          openssh_client(sshd, alice, daemon, runtime_dir, known_hosts)) as server:
        assert server.me().user == alice.user.name  # one connection, now idle
        dials = Dials(server)
        server.prepare_connections(1)
        wait_for(lambda: dials.count == 1, what="the connection dialed ahead")
        # An upload holds one connection; a request beside it takes the one dialed
        # ahead instead of dialing (and waiting for) another.
        go, started = threading.Event(), threading.Event()

        def held() -> Iterator[bytes]:
            started.set()
            assert go.wait(20)
            yield bytes(1024)  # an empty pack

        with ThreadPoolExecutor(1) as pool:
            upload = pool.submit(server.upload_pack, held())
            assert started.wait(20)
            assert server.me().user == alice.user.name
            go.set()
            assert upload.result()["stored"] == 0
        assert dials.count == 1
    if transport == "openssh":
        exit_master(server)


def test_a_connection_that_fails_to_dial_ahead_is_dialed_again_with_its_error(
        tmp_path) -> None:
    port = free_port()
    with ServerClient(http_client_for(f"someone@127.0.0.1:{port}")) as server:
        server.prepare_connections(1)
        with pytest.raises(ConnectionFailed, match=f"nothing listens on 127.0.0.1:{port}"):
            server.me()


def test_closing_the_client_ends_the_ssh_connection(daemon, sshd, accounts, known_hosts) -> None:
    alice = accounts[0]
    server = client(sshd, alice, known_hosts, daemon)
    server.me()
    assert sshd.session_pids(alice.user)
    server.close()
    wait_for(lambda: not sshd.session_pids(alice.user), what="the SSH session to end")


def test_unknown_host_key_is_refused_until_trusted(daemon, sshd, accounts, tmp_path) -> None:
    nai_known = tmp_path / "nai" / "known_hosts"
    expected = openssh_fingerprint(Path(f"{sshd.host_key}.pub"))
    with pytest.raises(UnknownHostKey) as refused:
        client(sshd, accounts[0], nai_known, daemon).me()
    message = str(refused.value)
    assert "ssh-ed25519" in message and expected in message
    assert "nai server trust lab" in message
    assert not nai_known.exists()  # never added silently

    keytype, _, fingerprint = fetch_host_key(sshd.target(accounts[0].user))
    assert (keytype, fingerprint) == ("ssh-ed25519", expected)
    assert trust_host_key(sshd.target(accounts[0].user), nai_known) == (keytype, expected)
    assert nai_known.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    with client(sshd, accounts[0], nai_known, daemon) as server:
        assert server.me().user == accounts[0].user.name


def test_hashed_entry_is_honoured_and_retrusting_replaces(daemon, sshd, accounts,
                                                          tmp_path) -> None:
    nai_known = tmp_path / "known_hosts"
    trust_host_key(sshd.target(accounts[0].user), nai_known, hashed=True)
    trust_host_key(sshd.target(accounts[0].user), nai_known, hashed=True)
    lines = nai_known.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("|1|")
    assert str(sshd.port) not in lines[0]
    with client(sshd, accounts[0], nai_known, daemon) as server:
        assert server.me().user == accounts[0].user.name


def test_changed_host_key_is_refused_loudly(daemon, sshd, accounts, tmp_path) -> None:
    other = ssh_keygen(tmp_path / "other_host_key")
    keytype, blob = Path(f"{other}.pub").read_text().split()[:2]
    nai_known = tmp_path / "known_hosts"
    nai_known.write_text(f"[127.0.0.1]:{sshd.port} {keytype} {blob}\n")
    before = nai_known.read_text()
    with pytest.raises(HostKeyChanged) as refused:
        client(sshd, accounts[0], nai_known, daemon).me()
    message = str(refused.value)
    assert "CHANGED" in message and "man in the middle" in message
    assert openssh_fingerprint(Path(f"{sshd.host_key}.pub")) in message
    assert nai_known.read_text() == before


def test_missing_nai_server_says_so(daemon, sshd, sshd_factory, accounts, known_hosts,
                                    tmp_path) -> None:
    with pytest.raises(ConnectionFailed, match="nai-server is not installed on"):
        client(sshd, accounts[0], known_hosts, daemon,
               remote_command="nai-server-missing dial-stdio").me()

    bare = sshd_factory(path="/usr/bin:/bin")  # sessions without the venv on the PATH
    bare.authorize(accounts[0].user)
    key = bare.root / "client-keys" / accounts[0].user.name
    bare_known = bare.write_known_hosts(tmp_path / "bare_known_hosts")
    http = http_client_for(bare.target(accounts[0].user), known_hosts=bare_known,
                           identity_file=key, remote_command="nai-server dial-stdio")
    with pytest.raises(ConnectionFailed) as refused, ServerClient(http, "bare") as server:
        server.me()
    assert "nai-server is not installed on" in str(refused.value)
    assert "PATH" in str(refused.value) and "not found" in str(refused.value)


def test_relay_error_is_shown(daemon, sshd, accounts, known_hosts) -> None:
    with pytest.raises(ConnectionFailed, match=r"no daemon socket at /nonexistent/nai\.sock"):
        client(sshd, accounts[0], known_hosts, daemon,
               remote_command="nai-server dial-stdio --socket /nonexistent/nai.sock").me()


def test_network_errors_in_words(tmp_path) -> None:
    with pytest.raises(ConnectionFailed, match=r"cannot resolve host nai-no-such-host\.invalid"):
        ServerClient(http_client_for("ssh://someone@nai-no-such-host.invalid")).me()
    port = free_port()
    with pytest.raises(ConnectionFailed,
                       match=f"nothing listens on 127.0.0.1:{port}; is sshd running"):
        ServerClient(http_client_for(f"someone@127.0.0.1:{port}")).me()


def test_login_without_an_accepted_key(daemon, sshd, accounts, known_hosts, tmp_path) -> None:
    stranger = ssh_keygen(tmp_path / "stranger")
    with pytest.raises(ConnectionFailed) as refused:
        client(sshd, accounts[0], known_hosts, daemon, identity_file=stranger).me()
    message = str(refused.value)
    assert f"SSH login as {accounts[0].user.name}@127.0.0.1 failed: no accepted key" in message
    assert "ssh-add" in message and "IdentityFile" in message
    assert isinstance(refused.value, LoginFailed)  # `nai` exits 4 for it


def test_reconnects_after_the_connection_dropped(daemon, sshd, accounts, known_hosts) -> None:
    alice = accounts[0]
    with client(sshd, alice, known_hosts, daemon) as server:
        assert server.me().user == alice.user.name
        first = set(sshd.session_pids(alice.user))
        for pid in first:
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not first & set(sshd.session_pids(alice.user)),
                 what="the SSH session processes to exit")
        assert server.me().user == alice.user.name
        assert server.me().user == alice.user.name
        assert not first & set(sshd.session_pids(alice.user))


# --- the system ssh --------------------------------------------------------------------


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A short private directory for ControlMaster sockets (unix paths are short)."""
    path = Path(tempfile.mkdtemp(prefix="nai-run-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def openssh_client(sshd: Sshd, account: Account, daemon: Daemon, runtime_dir: Path,
                   known_hosts_file: Path, **kwargs: object) -> ServerClient:
    options: dict[str, object] = {
        "transport": "openssh", "identity_file": account.key, "remote_command": relay(daemon),
        "runtime_dir": runtime_dir, "name": "lab",
        "ssh_options": ["-o", f"UserKnownHostsFile={known_hosts_file}"]}
    options.update(kwargs)
    return ServerClient(http_client_for(sshd.target(account.user), **options),  # type: ignore[arg-type]
                        name="lab")


def exit_master(server: ServerClient) -> None:
    server.http._transport.backend.exit_master()  # type: ignore[attr-defined]


def test_openssh_transport(daemon, sshd, accounts, known_hosts, runtime_dir) -> None:
    for account in accounts:
        server = openssh_client(sshd, account, daemon, runtime_dir, known_hosts)
        try:
            assert server.me().user == account.user.name
            with ThreadPoolExecutor(max_workers=12) as pool:
                users = list(pool.map(lambda _: server.me().user, range(30)))  # noqa: B023
            assert users == [account.user.name] * 30
            assert list(runtime_dir.glob("ssh-*"))  # the ControlMaster socket
        finally:
            exit_master(server)
            server.close()


def test_openssh_nai_known_hosts_file_is_used(daemon, sshd, accounts, known_hosts,
                                              runtime_dir, tmp_path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.touch()
    server = openssh_client(sshd, accounts[0], daemon, runtime_dir, empty,
                            known_hosts=known_hosts,
                            ssh_options=["-o", "GlobalKnownHostsFile=/dev/null"])
    try:
        assert server.me().user == accounts[0].user.name
    finally:
        exit_master(server)
        server.close()


def test_openssh_errors_in_words(daemon, sshd, accounts, known_hosts, runtime_dir,
                                 tmp_path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.touch()
    with pytest.raises(UnknownHostKey) as refused:
        openssh_client(sshd, accounts[0], daemon, runtime_dir, empty).me()
    message = str(refused.value)
    assert "nai server trust lab" in message
    assert openssh_fingerprint(Path(f"{sshd.host_key}.pub")) in message
    assert empty.read_text() == ""

    other = ssh_keygen(tmp_path / "other_host_key")
    keytype, blob = Path(f"{other}.pub").read_text().split()[:2]
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {keytype} {blob}\n")
    with pytest.raises(HostKeyChanged, match="man in the middle"):
        openssh_client(sshd, accounts[0], daemon, runtime_dir, wrong).me()
    server = openssh_client(sshd, accounts[0], daemon, runtime_dir, known_hosts,
                            remote_command="nai-server-missing dial-stdio")
    try:
        with pytest.raises(ConnectionFailed, match="nai-server is not installed on"):
            server.me()
    finally:
        exit_master(server)
    http = http_client_for(f"ssh://someone@127.0.0.1:{free_port()}", transport="openssh",
                           runtime_dir=runtime_dir)
    with pytest.raises(ConnectionFailed, match="nothing listens on"):
        ServerClient(http).me()
    http = http_client_for("someone@nai-no-such-host.invalid", transport="openssh",
                           runtime_dir=runtime_dir)
    with pytest.raises(ConnectionFailed, match=r"cannot resolve host nai-no-such-host\.invalid"):
        ServerClient(http).me()


def test_local_client_reaches_the_socket(daemon) -> None:
    with ServerClient(local_http_client(daemon.socket)) as server:
        assert server.me().user == "root"


@pytest.mark.parametrize("transport", ["ssh", "openssh"])
def test_a_large_file_the_server_has_is_dropped_mid_upload(
        transport, daemon, sshd, accounts, known_hosts, runtime_dir, tmp_path,
        monkeypatch) -> None:
    # A cold copy of a file the server has: it starts travelling unnamed before it is
    # hashed, and the upload is cut once the server says it has it. The cut goes
    # through the real transport; the push still records the tree, nothing partial
    # stays on the server, and the client goes on.
    monkeypatch.setattr(sync, "UNHASHED_BYTES", 1 << 20)
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "model.bin").write_bytes(os.urandom(24 << 20))
    settled = time.time() - 60
    os.utime(folder / "model.bin", (settled, settled))
    alice = accounts[0]
    server = (client(sshd, alice, known_hosts, daemon) if transport == "ssh" else
              openssh_client(sshd, alice, daemon, runtime_dir, known_hosts))
    try:
        with HashCache(tmp_path / "a.sqlite") as cache:
            first = sync.push(server, folder, cache=cache, progress=sync.silent_progress)
        dropped = threading.Event()
        real_drop, real_upload = sync.Drops.drop, server.upload_pack
        sent = [0]

        def drop(self: sync.Drops, path: Path) -> None:
            real_drop(self, path)
            dropped.set()

        def held_upload(stream):  # waits after the first chunk until the drop
            def chunks():
                for chunk in stream:
                    sent[0] += len(chunk)
                    yield chunk
                    assert dropped.wait(20)
            return real_upload(chunks())

        monkeypatch.setattr(sync.Drops, "drop", drop)
        server.upload_pack = held_upload  # type: ignore[method-assign]
        with HashCache(tmp_path / "b.sqlite") as fresh:  # another clone, a lost cache
            assert sync.push(server, folder, cache=fresh, progress=sync.silent_progress) == first
        assert dropped.is_set() and sent[0] < 4 << 20
        assert server.me().user == alice.user.name
    finally:
        if transport == "openssh":
            exit_master(server)
        server.close()
    tmp = daemon.state / "blobs" / "tmp"
    wait_for(lambda: not list(tmp.iterdir()), what="the cut blob's temp file to go")


def test_openssh_login_without_an_accepted_key(daemon, sshd, accounts, known_hosts,
                                               runtime_dir, tmp_path) -> None:
    stranger = ssh_keygen(tmp_path / "stranger")
    with pytest.raises(LoginFailed, match="no accepted key"):  # `nai` exits 4 for it
        openssh_client(sshd, accounts[0], daemon, runtime_dir, known_hosts,
                       identity_file=stranger).me()
