"""A real webhook receiver on 127.0.0.1 for tests: records every request and answers from a script.

``Receiver(reply)`` calls ``reply(request, index)`` for each request (index counts from 0) and
answers with the returned :class:`Reply`; ``Reply(hang=True)`` never answers (until the receiver
stops), which is how a dead endpoint looks to a sender with a timeout.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    at: float
    """time.monotonic() when the request had been read."""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    reset_after_headers: bool = False
    """Send the status and headers, then reset the connection (RST) before the promised body."""


def ok(_request: Received, _index: int) -> Reply:
    return Reply(200)


class Receiver:
    def __init__(self, reply: Callable[[Received, int], Reply] = ok, *, tls: ssl.SSLContext | None = None) -> None:
        self.reply = reply
        self.scheme = "https" if tls else "http"
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first ``count`` requests, waiting up to ``timeout`` seconds for them."""
        end = time.monotonic() + timeout
        with self._arrived:
            while len(self.received) < count:
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} of {count} requests arrived within {timeout} s")
                self._arrived.wait(left)
            return list(self.received[:count])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Received(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                )
                with receiver._arrived:
                    index = len(receiver.received)
                    receiver.received.append(request)
                    receiver._arrived.notify_all()
                reply = receiver.reply(request, index)
                if reply.hang:
                    receiver._stopping.wait()
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if "content-length" not in {name.lower() for name in reply.headers}:
                    self.send_header("Content-Length", "0")
                self.end_headers()
                if reply.reset_after_headers:
                    self.wfile.flush()
                    time.sleep(0.2)  # the client is now reading the body
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()

            do_POST = do_PUT = do_GET = _any

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        return Handler


__all__ = ["Received", "Receiver", "Reply", "ok"]
