"""Composition root and run loop: build the service, serve the API on the unix
socket with uvicorn, and step the service every tick until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import uvicorn

from nai_server.api import create_app, gateway
from nai_server.api.identity import ConnectionLimits, LogThrottle, guarded_protocol
from nai_server.app.use_cases import UseCases
from nai_server.config import ServerConfig
from nai_server.host.gpus import GpuInventory, open_inventory
from nai_server.plugins import CHOICES, PluginRegistry
from nai_server.store.atomic import CommitLock
from nai_server.store.blobs import BlobStore
from nai_server.store.db import TinyDbStore

log = logging.getLogger("nai.daemon")

# After a tick, wait before the next even when woken early, so that a burst of
# submissions costs a few scheduling passes, not one each: at least MIN_TICK_GAP,
# and TICK_DUTY times the last pass's duration, so passes take at most about a
# sixth of the daemon's time however long the queue grows.
MIN_TICK_GAP = 0.01
TICK_DUTY = 5.0

# sshd and relays connect non-blocking: a full backlog fails their connect at once.
LISTEN_BACKLOG = 1024

# Descriptors kept back from connections: the database, blobs being written, job logs,
# the pipes of the jobs the daemon starts.
FD_RESERVE = 256
# uvicorn answers 503 to a request once its connections or running requests reach
# limit_concurrency. The guard already keeps capped users' connections to
# limits.max_connections; uvicorn's limit sits above it, for root's connections and
# requests still finishing after their connection went.
CONCURRENCY_MARGIN = 64
# When accept() fails (EMFILE...), asyncio reports it once per waiting connection,
# up to the backlog, every second: 282,000 lines in 25 s once. One line per this long.
ACCEPT_ERROR_LOG_EVERY = 10.0


class DaemonError(Exception):
    """The daemon cannot start; the message says why and what to do."""


def bootstrap(
    config: ServerConfig,
    *,
    clock: Callable[[], float] = time.time,
    gpus: GpuInventory | None = None,
    plugins: PluginRegistry | None = None,
) -> UseCases:
    """The one place that picks implementations and wires them together."""
    state = config.state
    state.mkdir(parents=True, exist_ok=True, mode=0o700 if config.personal else 0o711)
    lock = CommitLock()
    store = TinyDbStore(state, lock)  # raises StateUnreadable naming the file
    blobs = BlobStore(state / "blobs")
    blobs.clean_tmp()  # leftovers of uploads cut off by a crash
    inventory, gpu_note = (gpus, None) if gpus is not None else open_inventory(config.gpus)
    if plugins is None:  # installed plugins; a broken one is listed, not fatal
        with lock:
            choices = store.get_setting(CHOICES)
        plugins = PluginRegistry.discover(config.plugins, choices)
    return UseCases(config, store, blobs, clock=clock, gpus=inventory, gpu_note=gpu_note,
                    lock=lock, plugins=plugins)


def socket_answers(path: Path, timeout: float = 1.0) -> bool:
    """Whether something accepts connections on the unix socket `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def bind_socket(path: Path, personal: bool) -> socket.socket:
    """Bind the API socket: 0600 for a personal daemon, 0666 for a multi-user one
    (identity comes from SO_PEERCRED, not from who may connect)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if personal else 0o755)
    if path.exists() or path.is_symlink():
        if socket_answers(path):
            raise DaemonError(f"another nai-server is already answering on {path}")
        path.unlink()  # stale socket of a daemon that died
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # no window in which the socket is more open than meant
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600 if personal else 0o666)
    sock.listen(LISTEN_BACKLOG)
    return sock


async def _ticker(service: UseCases, server: uvicorn.Server, burst: bool) -> None:
    interval = service.config.scheduler.tick_seconds
    while not server.should_exit:
        started = time.monotonic()
        try:
            await anyio.to_thread.run_sync(service.tick)
        except Exception:
            log.exception("tick failed; retrying next tick")
        gap = min(interval, max(MIN_TICK_GAP, TICK_DUTY * (time.monotonic() - started)))
        if burst and not service.busy():
            log.info("burst mode: nothing queued or running, exiting")
            server.should_exit = True
            break
        wakeup = service.wakeup
        assert wakeup is not None
        await asyncio.sleep(gap)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout=interval - gap)
        wakeup.clear()


class _Server(uvicorn.Server):
    """uvicorn's server without its signal capture: uvicorn re-raises a captured
    SIGTERM after shutdown, which would kill the process before our cleanup; the
    daemon installs its own handlers instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(service: UseCases, sock: socket.socket, *, burst: bool = False) -> None:
    """Serve until a signal (uvicorn handles SIGINT/SIGTERM) or, in burst mode, idle."""
    app = create_app(service)
    # Builds every route's request handler now. FastAPI would build each on the route's
    # first request (15-20 ms apiece), so the first push after a start paid ~50 ms.
    app.openapi()
    limits = connection_limits(service.config)
    config = uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=LISTEN_BACKLOG,
        timeout_graceful_shutdown=3,
        timeout_keep_alive=service.config.limits.keepalive_timeout,  # type: ignore[arg-type]
        limit_concurrency=limits.total + CONCURRENCY_MARGIN,
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(loop_error_handler(LogThrottle(log, ACCEPT_ERROR_LOG_EVERY)))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _request_exit, server, sig)
    # A job the daemon started has ended: reap it and start the next one now,
    # not at the next tick (jobs adopted after a restart are still polled each tick).
    loop.add_signal_handler(signal.SIGCHLD, service.notify)
    service.attach_loop(asyncio.get_running_loop(), asyncio.Event())
    ticker = asyncio.create_task(_ticker(service, server, burst))
    service.services.start()  # the services' supervisor thread
    served = gateway.start(service)  # services on TCP, if the config says so
    try:
        await server.serve(sockets=[sock])
    finally:
        server.should_exit = True
        if served is not None:
            served[0].should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(served[1], timeout=5)
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


def connection_limits(config: ServerConfig) -> ConnectionLimits:
    """The connection guard's limits: the configured ones, with the total kept within
    the descriptors this process may open."""
    limits = config.limits
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    total = limits.max_connections
    if nofile != resource.RLIM_INFINITY:
        room = max(nofile - FD_RESERVE, nofile // 4)
        if room < total:
            log.warning("limits.max_connections lowered from %d to %d: the daemon may open "
                        "only %d files (raise its RLIMIT_NOFILE, e.g. LimitNOFILE= in its "
                        "systemd unit)", total, room, nofile)
            total = room
    return ConnectionLimits(
        per_user=limits.connections_per_user,
        total=total,
        header_timeout=limits.header_timeout,
        idle_timeout=limits.idle_timeout,
        exempt=frozenset({0, os.getuid()}),
    )


def raise_nofile() -> int:
    """Raise the soft limit on open files to the hard one: every connection is one.
    Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit still stops at the kernel's fs.nr_open (2^20 by default).
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %s to %s: %s",
                        soft, target, exc)
    return soft


AcceptHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]


def loop_error_handler(throttle: LogThrottle) -> AcceptHandler:
    """The event loop's error handler: accept() failures (out of descriptors or memory)
    go through `throttle`, one line per period with a count; the rest to asyncio's own."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system"):
            throttle.log(logging.ERROR, "cannot accept connections: %s; new connections "
                         "wait in the backlog, retried every second", context.get("exception"))
            return
        loop.default_exception_handler(context)

    return handle


def _request_exit(server: uvicorn.Server, sig: int) -> None:
    log.info("received %s, shutting down", signal.Signals(sig).name)
    if server.should_exit:  # a second signal: stop waiting for open connections
        server.force_exit = True
    server.should_exit = True


def run(config: ServerConfig, *, burst: bool = False) -> None:
    """`nai-server run`: bootstrap, bind, serve, clean up the socket."""
    nofile = raise_nofile()
    service = bootstrap(config)
    sock = bind_socket(config.socket_path, config.personal)
    log.info("nai-server (%s mode) listening on %s, state in %s, %d open files at most",
             config.mode, config.socket_path, config.state, nofile)
    try:
        asyncio.run(serve(service, sock, burst=burst))
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            config.socket_path.unlink()
        service.close()
        log.info("nai-server stopped")
