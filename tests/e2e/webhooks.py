"""A real webhook receiver for the subscriptions e2e tests: an HTTP server on 127.0.0.1 in a thread.

It records every request (method, path, headers, body) and answers 200, or a failure for the
first ``fail_first`` requests (``fail_status``). Signatures are checked by the tests with the
``standardwebhooks`` package, an implementation this project did not write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.support.webhook_receiver import Received, Reply
from tests.support.webhook_receiver import Receiver as ScriptedReceiver

__all__ = ["Received", "Receiver", "unique", "verify"]


class Receiver(ScriptedReceiver):
    """The shared receiver (tests.support.webhook_receiver), scripted to fail its first
    ``fail_first`` requests with ``fail_status`` and to take ``delay`` seconds over each answer;
    :meth:`snapshot` holds the requests it answered with 200."""

    def __init__(self, fail_first: int = 0, fail_status: int = 500, delay: float = 0.0) -> None:
        def reply(_request: Received, index: int) -> Reply:
            if delay:
                time.sleep(delay)  # a slow endpoint
            return Reply(fail_status if index < fail_first else 200)

        super().__init__(reply)
        self.fail_first = fail_first

    @property
    def answered(self) -> int:
        with self._lock:
            return len(self.received)

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received[self.fail_first :])

    def wait_for(  # type: ignore[override]  # a predicate over the answered requests, not a count
        self, predicate: Callable[[list[Received]], bool], timeout: float = 20.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.snapshot()
            if predicate(seen):
                return seen
            time.sleep(0.05)
        seen = self.snapshot()
        raise AssertionError(f"the receiver did not get what was expected in {timeout}s; got {len(seen)} requests")


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
