"""A real OpenSSH `sshd` on loopback, for the tests and the benchmarks.

Started with its own host key and config (per the notes on sshd in tests: no
/run/sshd means no start, StrictModes off for keys under /tmp, UsePAM off), and
stopped together with the sessions it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nai_server.testing import wait_for


class Account(Protocol):
    name: str
    uid: int


SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def ssh_keygen(path: Path, comment: str = "nai-test") -> Path:
    """A new ed25519 key pair without passphrase at `path` (+ `.pub`); returns `path`."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                    "-f", str(path)], check=True)
    return path


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


@dataclass
class Sshd:
    """An `sshd -D` on 127.0.0.1:port with its own host key and authorized-keys dir."""

    root: Path
    port: int
    host_key: Path
    keys_dir: Path
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def host_key_line(self) -> str:
        """The known_hosts line for this server (`[127.0.0.1]:port type base64`)."""
        keytype, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {keytype} {blob}"

    def write_known_hosts(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.host_key_line + "\n")
        return path

    def authorize(self, user: Account) -> Path:
        """A new client key pair that may log in as `user`; returns the private key."""
        key = ssh_keygen(self.root / "client-keys" / user.name, f"{user.name}@nai-test")
        entry = self.keys_dir / user.name
        with entry.open("a") as out:
            out.write(Path(f"{key}.pub").read_text())
        entry.chmod(0o644)
        return key

    def target(self, user: Account) -> str:
        return f"ssh://{user.name}@{self.host}:{self.port}"

    def start(self) -> None:
        log = open(self.root / "sshd.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.config)],
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_for(lambda: proc.poll() is not None or port_accepts(self.port),
                 20, f"sshd on port {self.port}")
        if self.proc.poll() is not None:
            raise AssertionError(f"sshd exited {self.proc.returncode}:\n{self.log()}")

    def log(self) -> str:
        return (self.root / "sshd.log").read_text(errors="replace")

    def session_pids(self, user: Account) -> list[int]:
        """The per-connection sshd processes that run as `user` (kill one to cut the
        connection)."""
        if self.proc is None:
            return []
        pids = []
        for pid in _children(self.proc.pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if fields["Name"].strip() == "sshd" and int(fields["Uid"].split()[0]) == user.uid:
                pids.append(pid)
        return pids

    def stop(self) -> None:
        """Stop the listener and every session it started (they outlive it otherwise)."""
        if self.proc is None:
            return
        for pid in [*_children(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None




def write_config(root: Path, port: int, host_key: Path, keys_dir: Path, session_path: str,
                 extra_config: str = "") -> Path:
    """A minimal sshd_config: key logins only, one authorized-keys file per user."""
    config = root / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\n"
        f"HostKey {host_key}\n"
        "PidFile none\n"
        f"AuthorizedKeysFile {keys_dir}/%u\n"
        "StrictModes no\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "Subsystem sftp internal-sftp\n"
        f"SetEnv PATH={session_path}\n"
        + extra_config)
    return config


def make_sshd(root: Path, session_path: str, extra_config: str = "") -> Sshd:
    """Lay out and start an sshd under `root` (which must be readable by the users)."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd refuses to start without it
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # sshd reads authorized keys as the user
    keys_dir = root / "authorized"
    keys_dir.mkdir(mode=0o755)
    (root / "client-keys").mkdir(mode=0o700)
    host_key = ssh_keygen(root / "host_ed25519", "nai-test-host")
    port = free_port()
    config = write_config(root, port, host_key, keys_dir, session_path, extra_config)
    server = Sshd(root, port, host_key, keys_dir, config)
    server.start()
    return server
