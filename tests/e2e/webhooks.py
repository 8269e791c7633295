"""A real webhook receiver for the subscriptions e2e tests: an HTTP server on 127.0.0.1 in a thread.

It records every request (method, path, headers, body) and answers 200, or a failure for the
first ``fail_first`` requests (``fail_status``). Signatures are checked by the tests with the
``standardwebhooks`` package, an implementation this project did not write.
"""

from __future__ import annotations

import json
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
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    fail_first: int = 0
    fail_status: int = 500
    delay: float = 0.0
    """Seconds to wait before answering (a slow endpoint)."""
    requests: list[Received] = field(default_factory=list)
    answered: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver._lock:
                    receiver.answered += 1
                    failing = receiver.answered <= receiver.fail_first
                    if not failing:
                        receiver.requests.append(
                            Received(
                                self.command,
                                self.path,
                                {k.lower(): v for k, v in self.headers.items()},
                                body,
                                time.monotonic(),
                            )
                        )
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(receiver.fail_status if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_GET = do_DELETE = _handle

            def log_message(self, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                seen = list(self.requests)
            if predicate(seen):
                return seen
            time.sleep(0.05)
        with self._lock:
            seen = list(self.requests)
        raise AssertionError(f"the receiver did not get what was expected in {timeout}s; got {len(seen)} requests")

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.requests)


def verify(secret: str, request: Received) -> Any:
    """Check the Standard Webhooks signature with the reference package; returns its parsed body."""
    from standardwebhooks.webhooks import Webhook

    headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
    return Webhook(secret).verify(request.body, headers, json_parse=bool(request.body))


def unique(requests: list[Received]) -> list[Received]:
    """De-duplicated by ``webhook-id``, as a consumer does (first arrival kept)."""
    seen: set[str] = set()
    out = []
    for request in requests:
        key = request.headers["webhook-id"]
        if key not in seen:
            seen.add(key)
            out.append(request)
    return out
