"""The dial-stdio relay moves bytes both ways intact, with splice(2) when stdin is a pipe
(as under sshd) and with plain reads and writes otherwise, and passes the end of the
request on as a half-close."""

from __future__ import annotations

import fcntl
import os
import random
import select
import socket
import threading

import pytest

from nai_server.cli.dial_stdio import PIPE_SIZE, relay, widen
from nai_server.testing import imports_of


def echo_reversed(server: socket.socket, half: int, got_half: threading.Event) -> None:
    """A stand-in daemon: read the whole request (until the half-close), answer with
    its bytes reversed, close."""
    request = bytearray()
    while data := server.recv(1 << 16):
        request += data
        if len(request) >= half:
            got_half.set()
    server.sendall(bytes(reversed(request)))
    server.close()


def feed(fd: int, data: bytes, half: int, got_half: threading.Event) -> None:
    """Write the first half, wait until it has gone through (the relay then finds stdin
    empty but open), then the rest, then close."""
    for part in (data[:half], data[half:]):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]
        got_half.wait(20)
    os.close(fd)


def drain(fd: int, out: bytearray) -> None:
    while data := os.read(fd, 1 << 16):
        out += data
    os.close(fd)


@pytest.mark.parametrize("stdin_kind", ["pipe", "socket"])
def test_relay_carries_both_ways_and_passes_on_the_end(stdin_kind: str) -> None:
    request = random.Random(7).randbytes(3 * (1 << 20) + 123)
    ours, daemon = socket.socketpair()
    if stdin_kind == "pipe":  # splice moves it
        stdin_read, stdin_write = os.pipe()
    else:  # splice refuses a socket to socket copy: the fallback copies
        a, b = socket.socketpair()
        stdin_read, stdin_write = os.dup(a.fileno()), os.dup(b.fileno())
        a.close()
        b.shutdown(socket.SHUT_RD)
        b.close()
    stdout_read, stdout_write = os.pipe()
    answer = bytearray()
    half, got_half = len(request) // 2, threading.Event()
    workers = [threading.Thread(target=echo_reversed, args=(daemon, half, got_half), daemon=True),
               threading.Thread(target=feed, args=(stdin_write, request, half, got_half)),
               threading.Thread(target=drain, args=(stdout_read, answer))]
    for worker in workers:
        worker.start()
    relay(ours, stdin_read, stdout_write)
    os.close(stdout_write)
    for worker in workers:
        worker.join(20)
    ours.close()
    os.close(stdin_read)
    assert bytes(answer) == bytes(reversed(request))


def test_relay_waits_through_idle_moments_between_requests() -> None:
    # Keep-alive: request, answer, a pause with nothing in flight, request, answer.
    ours, daemon = socket.socketpair()
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()

    def serve() -> None:
        for _ in range(2):
            question = daemon.recv(100)
            daemon.sendall(question.upper())
        assert daemon.recv(100) == b""  # the half-close after stdin ended
        daemon.close()

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    relaying = threading.Thread(target=relay, args=(ours, stdin_read, stdout_write), daemon=True)
    relaying.start()
    for question in (b"first", b"second"):
        os.write(stdin_write, question)
        ready, _, _ = select.select([stdout_read], [], [], 20)
        assert ready, "no answer came back through the relay"
        assert os.read(stdout_read, 100) == question.upper()
    os.close(stdin_write)
    relaying.join(20)
    worker.join(20)
    assert not relaying.is_alive() and not worker.is_alive()
    os.close(stdout_write)  # as the relay's process exit does
    assert os.read(stdout_read, 100) == b""  # nothing after the answers
    for fd in (stdin_read, stdout_read):
        os.close(fd)
    ours.close()


def test_the_relay_starts_without_the_servers_libraries() -> None:
    # Every SSH connection starts `nai-server dial-stdio`: importing config, pydantic or
    # the web stack there cost 0.14 s a connection.
    printed, heavy, stderr = imports_of(
        "from nai_server.cli import main\n"
        "print(main(['dial-stdio', '--socket', '/nonexistent/nai.sock']))",
        ["pydantic", "yaml", "fastapi", "uvicorn", "starlette", "httpx"])
    assert printed == ["1"] and heavy == []
    assert "no daemon socket at /nonexistent/nai.sock" in stderr


def test_the_relay_widens_its_pipes_and_socket_buffer() -> None:
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY)
    a, b = socket.socketpair()
    try:
        before = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) < PIPE_SIZE
        widen(a, r, null)  # /dev/null is no pipe: left as it is, without an error
        assert fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) == PIPE_SIZE
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= before
    finally:
        for fd in (r, w, null):
            os.close(fd)
        a.close()
        b.close()
