"""``fhirflow serve --workers N``: worker processes that share connections evenly.

Worker processes that share one listening socket split connections by whichever accepts first,
and asyncio accepts every queued connection in one go: two clients that connect together often
land on one process, which then does all their work on one core while the others idle (seen
with 16 keep-alive clients split 15/1). Here the supervisor owns the socket instead: it accepts
each connection and passes it (``SCM_RIGHTS`` over a Unix socket pair) to the worker with the
fewest open connections, and each worker reports back when one of its connections closes.

A worker is a uvicorn ``Server`` without listeners that serves the connections it is handed
(``loop.connect_accepted_socket`` with uvicorn's own HTTP protocol). The supervisor restarts a
worker that dies and stops them all on SIGINT/SIGTERM; a worker exits when its channel to the
supervisor closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from typing import Any

import uvicorn

logger = logging.getLogger("fhirflow.serve")

_CLOSED = b"c"
"""What a worker sends its supervisor for each connection that closed."""

_spawn = multiprocessing.get_context("spawn")
multiprocessing.allow_connection_pickling()  # a socket passed to a spawned process


class ChannelServer(uvicorn.Server):
    """A uvicorn server that listens on nothing and serves the connections its supervisor passes
    over ``channel``."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
        super().__init__(config)
        self.channel = channel
        self._handing: set[asyncio.Task[Any]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        loop = asyncio.get_running_loop()
        channel = self.channel
        base: Any = self.config.http_protocol_class

        class Counted(base):  # type: ignore[misc]
            def connection_lost(self, exc: Exception | None) -> None:
                super().connection_lost(exc)
                with contextlib.suppress(OSError):  # the supervisor is gone: the channel's reader stops us
                    channel.send(_CLOSED)

        def protocol() -> asyncio.Protocol:
            made: asyncio.Protocol = Counted(
                config=self.config, server_state=self.server_state, app_state=self.lifespan.state
            )
            return made

        def receive() -> None:
            try:
                _, fds, _, _ = socket.recv_fds(channel, 16, 64)
            except BlockingIOError:
                return
            except OSError:
                fds = []
            if not fds:  # the supervisor closed the channel
                loop.remove_reader(channel.fileno())
                self.should_exit = True
                return
            for fd in fds:
                conn = socket.socket(fileno=fd)
                conn.setblocking(False)
                task = loop.create_task(loop.connect_accepted_socket(protocol, conn))
                self._handing.add(task)
                task.add_done_callback(self._handing.discard)

        channel.setblocking(False)
        loop.add_reader(channel.fileno(), receive)


def _serve_worker(config: uvicorn.Config, channel: socket.socket) -> None:
    """A worker process's body (spawned)."""
    config.configure_logging()
    with contextlib.suppress(KeyboardInterrupt):  # the supervisor stops workers with SIGTERM
        ChannelServer(config, channel).run()


@dataclass
class _Worker:
    process: SpawnProcess
    channel: socket.socket
    """The supervisor's end of the worker's socket pair."""
    open: int = 0
    """Connections passed to the worker that it has not reported closed."""


@dataclass
class Balancer:
    """The supervisor: accepts on ``config``'s host and port and deals connections to
    ``config.workers`` worker processes, fewest open connections first."""

    config: uvicorn.Config
    on_listening: Callable[[], None] | None = None
    """Called once the port listens (``fhirflow serve`` prints its banner then)."""
    workers: list[_Worker] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0

    def run(self) -> None:
        listener = self.config.bind_socket()
        listener.listen(self.config.backlog)
        listener.setblocking(False)
        if self.on_listening is not None:
            self.on_listening()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stop.set())
        with self._lock:
            self.workers = [self._start() for _ in range(max(1, self.config.workers))]
        dealer = threading.Thread(target=self._deal, args=(listener,), name="fhirflow-balancer", daemon=True)
        dealer.start()
        try:
            while not self._stop.wait(0.5):
                self._replace_dead()
        finally:
            self._stop.set()
            dealer.join(5)
            listener.close()
            self._stop_all()

    def _start(self) -> _Worker:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        process = _spawn.Process(target=_serve_worker, args=(self.config, theirs), name="fhirflow-worker")
        process.start()
        theirs.close()
        return _Worker(process, mine)

    def _replace_dead(self) -> None:
        with self._lock:
            for position, worker in enumerate(self.workers):
                if worker.process.is_alive() or self._stop.is_set():
                    continue
                process = worker.process
                logger.warning("worker %s exited with %s; starting another", process.pid, process.exitcode)
                worker.channel.close()
                self.workers[position] = self._start()

    def _deal(self, listener: socket.socket) -> None:
        """Accept connections and hand each to the least busy worker; count closes reported back."""
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            watched: dict[int, _Worker] = {}
            while not self._stop.is_set():
                with self._lock:
                    current = {w.channel.fileno(): w for w in self.workers if w.channel.fileno() >= 0}
                for fd in set(watched) - set(current):
                    selector.unregister(fd)
                for fd in set(current) - set(watched):
                    selector.register(fd, selectors.EVENT_READ)
                watched = current
                for key, _ in selector.select(timeout=0.5):
                    if key.fileobj is listener:
                        self._accept(listener)
                    elif not self._closed(watched[key.fd]):
                        selector.unregister(key.fd)  # the worker is gone: it is replaced
                        del watched[key.fd]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn, self._lock:
                self._hand(conn)

    def _hand(self, conn: socket.socket) -> None:
        alive = [w for w in self.workers if w.process.is_alive()] or self.workers
        # Fewest open connections; ties go round the workers in turn.
        start = self._next % len(alive)
        order = alive[start:] + alive[:start]
        worker = min(order, key=lambda w: w.open)
        self._next += 1
        try:
            socket.send_fds(worker.channel, [b"x"], [conn.fileno()])
        except OSError:
            return  # the worker died just now: the connection is dropped (the client retries)
        worker.open += 1

    def _closed(self, worker: _Worker) -> bool:
        """Count the closes ``worker`` reported; False when its channel is closed."""
        try:
            data = worker.channel.recv(4096)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        with self._lock:
            worker.open = max(0, worker.open - data.count(_CLOSED))
        return bool(data)

    def _stop_all(self) -> None:
        with self._lock:
            workers = list(self.workers)
        for worker in workers:
            if worker.process.is_alive() and worker.process.pid is not None:
                os.kill(worker.process.pid, signal.SIGTERM)
        for worker in workers:
            worker.process.join(10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.channel.close()
