"""The SSH connection's TCP socket sends small packets at once: with Nagle's algorithm
a request written as several SSH packets waited ~40 ms a call for the server's
delayed ACK (bench/serve.py: the forward over paramiko went from 56 to 28 ms p50)."""

from __future__ import annotations

import socket

from nai_tui.remote.hostkeys import _transport_factory


def test_the_ssh_transports_socket_has_nagle_off() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sock = socket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
        transport = _transport_factory(set())(sock)
        try:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            transport.close()
            peer.close()
            sock.close()
