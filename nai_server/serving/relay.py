"""`python -m nai_server.serving.relay -- COMMAND...`: a model's own server (its
`serve:` command) behind the TCP link, for a replica Slurm runs on another node.

The own server listens on its unix socket (`$NAI_SERVE_SOCKET`, as on one server);
this relay, in the same Slurm job and as the same user, listens on TCP on every
address of the node, writes `IP:PORT` for the daemon (`$NAI_SERVE_ADDRESS_FILE`), and
carries the bytes of a connection to the socket only once its peer has proved the
run's token (`$NAI_SERVE_TOKEN_FILE`; the handshake: link.py). It starts the command,
passes SIGTERM and SIGINT on to it, and ends with its exit status; killed itself, it
takes the command with it (`_die_with_parent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Callable

from nai_server.serving import link
from nai_server.serving.replica import own_address, write_address

COPY_SIZE = 1 << 16
PR_SET_PDEATHSIG = 1  # prctl(2)


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     token: bytes) -> bool:
    """The replica's side of the handshake on a stream: whether the peer proved it."""
    try:
        async with asyncio.timeout(link.HANDSHAKE_SECONDS):
            nonce_d = link.read_hello(await _line(reader))
            if nonce_d is None:
                return False
            nonce_r = link.nonce()
            writer.write(link.answer(token, nonce_d, nonce_r))
            await writer.drain()
            return link.read_finish(token, nonce_r, nonce_d, await _line(reader))
    except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, OSError, TimeoutError):
        return False


async def _line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readuntil(b"\n")
    if len(line) > link.MAX_LINE:
        raise asyncio.IncompleteReadError(line, None)
    return line


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(COPY_SIZE):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 token: bytes, path: str) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:  # pieces go out as they come (no Nagle: no 40 ms stalls)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if not await _handshake(reader, writer, token):
            return
        try:
            inner_reader, inner_writer = await asyncio.open_unix_connection(path)
        except OSError:
            return  # the server is not listening (yet): the daemon sees a closed link
        try:
            await asyncio.gather(_copy(reader, inner_writer), _copy(inner_reader, writer))
        finally:
            inner_writer.close()
    finally:
        writer.close()


def _die_with_parent(parent: int) -> Callable[[], None]:
    """For the command's process, before it runs: killed when the relay ends, however
    it ends (even by SIGKILL or the OOM killer), so that a model server never goes on
    holding its GPU behind a relay nobody can reach it through."""

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the relay died before the line above
            os._exit(1)

    return arm


async def relay(command: list[str]) -> int:
    env = os.environ
    path, token_file = env.get("NAI_SERVE_SOCKET"), env.get("NAI_SERVE_TOKEN_FILE")
    if not path or not token_file or not command:
        print("nai relay: needs NAI_SERVE_SOCKET, NAI_SERVE_TOKEN_FILE and a command",
              file=sys.stderr)
        return 2
    with open(token_file, "rb") as f:
        token = f.read().strip()
    child = await asyncio.create_subprocess_exec(
        *command, preexec_fn=_die_with_parent(os.getpid()))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, child.send_signal, sig)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("0.0.0.0", 0))
    sock.listen(256)
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, token, path), sock=sock)
    address_file = env.get("NAI_SERVE_ADDRESS_FILE")
    if address_file:
        write_address(address_file, own_address(), sock.getsockname()[1])
    async with server:
        status = await child.wait()
    with contextlib.suppress(OSError):
        os.unlink(path)
    return status if status >= 0 else 128 - status


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    return asyncio.run(relay(args))


if __name__ == "__main__":
    sys.exit(main())
