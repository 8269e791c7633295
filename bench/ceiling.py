"""How fast the load generators themselves go, on trivial endpoints served from a child process.

``canned`` is a bare asyncio protocol that answers every request with the same few bytes: what a
generator does against it is the generator's own ceiling, which must be well above what the CRUD
benchmark asks of the server. ``uvicorn hello`` is a one-line ASGI app under uvicorn configured like
``fhirflow serve``: the most any server built on it can do on this machine.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from bench.loadgen import LoadGenerator, LoadResult, Scenario, run_async
from bench.report import Row, at_least
from fhirflow.local.launcher import free_port

HOST = "127.0.0.1"
CONCURRENCY = 16
# The generator must outrun the server by a margin: twice the highest throughput target of the CRUD bench.
CEILING_TARGET = 3000.0
_CANNED = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class _Canned(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        self.pending += data
        answers = self.pending.count(b"\r\n\r\n")
        if answers:
            self.pending = self.pending[self.pending.rindex(b"\r\n\r\n") + 4 :]
            self.transport.write(_CANNED * answers)


def _serve_canned(port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Canned, HOST, port)
        await server.serve_forever()

    uvloop.run(main())


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _serve_uvicorn_hello(port: int) -> None:
    import uvicorn

    uvicorn.run(_hello, host=HOST, port=port, log_level="warning", access_log=False, lifespan="off")


@contextmanager
def _child_server(kind: str) -> Iterator[int]:
    port = free_port()
    target = _serve_canned if kind == "canned" else _serve_uvicorn_hello
    process = multiprocessing.get_context("spawn").Process(target=target, args=(port,), daemon=True)
    process.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or not process.is_alive():
                    raise RuntimeError(f"the {kind} server did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.join(5)


class HttpxLoadGenerator:
    """httpx.AsyncClient with a pool of keep-alive connections: measured for reference only."""

    name = "httpx.AsyncClient"

    def run(
        self, host: str, port: int, scenario: Scenario, *, concurrency: int, warmup_s: float, duration_s: float
    ) -> LoadResult:
        return run_async(self._run(host, port, scenario.paths[0], concurrency, warmup_s, duration_s))

    async def _run(
        self, host: str, port: int, path: str, concurrency: int, warmup_s: float, duration_s: float
    ) -> LoadResult:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        latencies: list[int] = []
        start = time.perf_counter_ns()
        window = (start + int(warmup_s * 1e9), start + int((warmup_s + duration_s) * 1e9))
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", limits=limits) as client:

            async def worker() -> None:
                while (began := time.perf_counter_ns()) < window[1]:
                    (await client.get(path)).raise_for_status()
                    ended = time.perf_counter_ns()
                    if window[0] <= ended <= window[1]:
                        latencies.append(ended - began)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return LoadResult.from_samples(latencies, 0, duration_s)


def run(generators: list[LoadGenerator], *, quick: bool) -> list[Row]:
    """The ceiling of every generator on the canned server, then the chosen one (first) on uvicorn hello."""
    warmup_s, duration_s = (0.5, 1.5) if quick else (1.0, 5.0)
    scenario = Scenario(name="trivial", method="GET", paths=("/",))
    candidates = [*generators] if quick else [*generators, HttpxLoadGenerator()]
    rows: list[Row] = []
    with _child_server("canned") as port:
        for generator in candidates:
            result = generator.run(
                HOST, port, scenario, concurrency=CONCURRENCY, warmup_s=warmup_s, duration_s=duration_s
            )
            is_reference = isinstance(generator, HttpxLoadGenerator)
            rows.append(
                Row.from_load(
                    "loadgen",
                    f"{generator.name} → canned, c={CONCURRENCY}",
                    result,
                    target=None if is_reference else at_least(result.throughput, CEILING_TARGET, "req/s"),
                    note="reference only" if is_reference else "",
                )
            )
    chosen = generators[0]
    with _child_server("uvicorn") as port:
        result = chosen.run(HOST, port, scenario, concurrency=CONCURRENCY, warmup_s=warmup_s, duration_s=duration_s)
        rows.append(
            Row.from_load("loadgen", f"{chosen.name} → uvicorn hello, c={CONCURRENCY}", result, note="server cap")
        )
    return rows
