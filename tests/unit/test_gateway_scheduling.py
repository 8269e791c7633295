"""The local gateway keeps its event loop free: a slow search never delays the CapabilityStatement
or a read by id on the same server process (issue 14, defect 5). Driven through the ASGI
interface with Lambda handlers that stand in for the services; no sockets."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from fhirflow.local.gateway import LocalGateway

SLOW_SECONDS = 1.5


def handlers(released: threading.Event) -> Any:
    def search(event: dict[str, Any], context: Any) -> dict[str, Any]:
        released.wait(SLOW_SECONDS)  # a search that takes a while (it blocks its thread, not the GIL)
        return {"statusCode": 200, "headers": {}, "body": "{}"}

    def crud(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"statusCode": 200, "headers": {}, "body": '{"resourceType":"CapabilityStatement"}'}

    return {"search": search, "crud": crud}.__getitem__


async def call(app: LocalGateway, method: str, path: str, query: bytes = b"") -> tuple[int, float]:
    started = time.perf_counter()
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.sleep(3600)
        delivered = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": []}
    await app(scope, receive, send)
    return sent[0]["status"], time.perf_counter() - started


def test_a_slow_search_does_not_hold_the_metadata_or_reads() -> None:
    released = threading.Event()
    app = LocalGateway(load_handler=handlers(released))

    async def scenario() -> tuple[list[float], list[int]]:
        started = time.perf_counter()

        async def answered(method: str, path: str) -> float:
            status, _ = await call(app, method, path)
            assert status == 200
            return time.perf_counter() - started  # from when it was sent, with the searches

        searches = [asyncio.create_task(call(app, "GET", "/Patient", b"name=x")) for _ in range(3)]
        quick = await asyncio.gather(answered("GET", "/metadata"), answered("GET", "/Patient/123"))
        released.set()
        return list(quick), [status for status, _ in await asyncio.gather(*searches)]

    quick, searches = asyncio.run(scenario())
    assert searches == [200, 200, 200]
    # On the loop, /metadata and the read would have waited for the searches (1.5 s each).
    assert max(quick) < SLOW_SECONDS / 2
