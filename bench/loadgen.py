"""The Python load generator: raw asyncio streams over persistent HTTP/1.1 keep-alive connections.

Each connection is one coroutine that sends a pre-built request and reads the answer
(``Content-Length`` framed, which is what uvicorn sends for every fhirflow response) before it
sends the next: a closed loop, like wrk. Requests are built once, before the clock starts, so
the per-request cost is one ``write``, one ``readuntil`` and one ``readexactly``. It runs on
uvloop when available, with the garbage collector off while it measures.
"""

from __future__ import annotations

import asyncio
import gc
import random
import re
import statistics
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:\s*chunked", re.IGNORECASE)


@dataclass(frozen=True)
class Scenario:
    """What to send: one of ``paths`` at random per request, with the body of the same index (or the only body)."""

    name: str
    method: str
    paths: tuple[str, ...]
    bodies: tuple[bytes, ...] = ()
    content_type: str = "application/fhir+json"

    def body_for(self, index: int) -> bytes:
        if not self.bodies:
            return b""
        return self.bodies[index] if len(self.bodies) > 1 else self.bodies[0]

    def raw_requests(self, host: str, port: int) -> list[bytes]:
        requests = []
        for index, path in enumerate(self.paths):
            body = self.body_for(index)
            head = f"{self.method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/fhir+json\r\n"
            if body or self.method in ("POST", "PUT", "PATCH"):
                head += f"Content-Type: {self.content_type}\r\nContent-Length: {len(body)}\r\n"
            requests.append(head.encode("latin-1") + b"\r\n" + body)
        return requests


@dataclass(frozen=True)
class LoadResult:
    """Requests completed inside the measurement window: successes, errors and latency summary."""

    ok: int
    errors: int
    throughput: float
    """Completed requests (successes and errors) per second."""
    median_ms: float
    p99_ms: float
    first_error: str = ""

    @property
    def completed(self) -> int:
        return self.ok + self.errors

    @classmethod
    def from_samples(cls, latencies_ns: list[int], errors: int, elapsed_s: float, first_error: str = "") -> LoadResult:
        nan = float("nan")
        return cls(
            ok=len(latencies_ns),
            errors=errors,
            throughput=(len(latencies_ns) + errors) / elapsed_s,
            median_ms=statistics.median(latencies_ns) / 1e6 if latencies_ns else nan,
            p99_ms=percentile(latencies_ns, 99) / 1e6 if latencies_ns else nan,
            first_error=first_error,
        )


def median_of_rounds(rounds: list[LoadResult]) -> LoadResult:
    """Each metric's median over repeated rounds: one round disturbed by the neighbours does not move it."""
    return LoadResult(
        ok=sum(r.ok for r in rounds),
        errors=sum(r.errors for r in rounds),
        throughput=statistics.median(r.throughput for r in rounds),
        median_ms=statistics.median(r.median_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
        first_error=next((r.first_error for r in rounds if r.first_error), ""),
    )


@dataclass
class _Tally:
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


def percentile(values: list[int] | list[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest value that ``pct`` percent of the values do not exceed."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return float(ordered[int(rank) - 1])


class LoadGenerator(Protocol):
    name: str

    def run(
        self, host: str, port: int, scenario: Scenario, *, concurrency: int, warmup_s: float, duration_s: float
    ) -> LoadResult: ...


def run_async(coro: Coroutine[Any, Any, LoadResult]) -> LoadResult:
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(coro)
    finally:
        if gc_was_enabled:
            gc.enable()


class AsyncioLoadGenerator:
    """Raw asyncio streams, one coroutine per keep-alive connection, all in this process on one core."""

    name = "python-asyncio"

    def __init__(self, seed: int = 1) -> None:
        self.seed = seed

    def run(
        self, host: str, port: int, scenario: Scenario, *, concurrency: int, warmup_s: float, duration_s: float
    ) -> LoadResult:
        requests = scenario.raw_requests(host, port)
        return run_async(self._run(host, port, requests, concurrency, warmup_s, duration_s))

    async def _run(
        self, host: str, port: int, requests: list[bytes], concurrency: int, warmup_s: float, duration_s: float
    ) -> LoadResult:
        tally = _Tally()
        connections = [await asyncio.open_connection(host, port) for _ in range(concurrency)]
        start = time.perf_counter_ns()
        window_start = start + int(warmup_s * 1e9)
        window_end = window_start + int(duration_s * 1e9)
        workers = [
            self._worker(reader, writer, requests, random.Random(self.seed + i), window_start, window_end, tally)
            for i, (reader, writer) in enumerate(connections)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for _, writer in connections:
                writer.close()
        elapsed_s = (window_end - window_start) / 1e9
        return LoadResult.from_samples(tally.latencies_ns, tally.errors, elapsed_s, tally.first_error)

    @staticmethod
    async def _worker(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        requests: list[bytes],
        rng: random.Random,
        window_start: int,
        window_end: int,
        tally: _Tally,
    ) -> None:
        count = len(requests)
        latencies = tally.latencies_ns
        clock = time.perf_counter_ns
        while True:
            began = clock()
            if began >= window_end:
                return
            writer.write(requests[rng.randrange(count)] if count > 1 else requests[0])
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                raise RuntimeError(f"the server closed a keep-alive connection: {exc!r}") from exc
            match = _CONTENT_LENGTH.search(head)
            if match:
                length = int(match.group(1))
                body = await reader.readexactly(length) if length else b""
            elif _CHUNKED.search(head):
                raise RuntimeError("chunked responses are not supported by the bench client")
            else:
                body = b""
            ended = clock()
            if window_start <= ended <= window_end:
                status = head[9:12]
                if status[:1] == b"2":
                    latencies.append(ended - began)
                else:
                    tally.errors += 1
                    if not tally.first_error:
                        tally.first_error = (head[:12] + b" " + body[:300]).decode("utf-8", "replace")
