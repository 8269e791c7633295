"""CRUD over HTTP on the embedded server: read, update and create latency and throughput at concurrency 1 and 16.

The server runs in a child process (``LocalServer``) and the load generator in this one, one core
each. Reads and updates pick one of the pre-created Patients at random; creates all post the same
HL7 example Patient (``bench/data/patient.json``, the R4 ``Patient-example`` without its id).
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import LoadGenerator, LoadResult, Scenario, median_of_rounds
from bench.report import Row, Target, at_least, at_most
from fhirflow.local.launcher import LocalServer

HOST = "127.0.0.1"
CONCURRENCIES = (1, 16)
TEMPLATE_PATH = Path(__file__).parent / "data" / "patient.json"

# The targets, keyed by (interaction, concurrency).
READ_MEDIAN_MS = 5.0
READS_PER_S = 1500.0
CREATES_PER_S = 500.0


@dataclass(frozen=True)
class ServerOptions:
    """How to start the server: which store, and anything else to pass to ``fhirflow serve``."""

    store: str = "sqlite"
    dynamodb_endpoint: str | None = None
    extra_args: tuple[str, ...] = ()

    def args(self) -> tuple[str, ...]:
        args = ["--store", self.store]
        if self.dynamodb_endpoint:
            args += ["--dynamodb-endpoint", self.dynamodb_endpoint]
        return (*args, *self.extra_args)


def template() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(TEMPLATE_PATH.read_text(encoding="utf-8"))
    return document


def _patient(index: int, resource_id: str | None = None) -> dict[str, Any]:
    patient = copy.deepcopy(template())
    patient["identifier"][0]["value"] = f"bench-{index:06d}"
    if resource_id is not None:
        patient["id"] = resource_id
    return patient


async def _preload(base_url: str, count: int) -> list[str]:
    """Create ``count`` Patients (16 at a time) and return their server-assigned ids."""
    import httpx

    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    headers = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
    semaphore = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def create(index: int) -> str:
            async with semaphore:
                reply = await client.post("/Patient", content=json.dumps(_patient(index)), headers=headers)
            reply.raise_for_status()
            # Location: <base>/Patient/<id>/_history/<vid>
            return reply.headers["location"].rstrip("/").split("/")[-3]

        return list(await asyncio.gather(*(create(i) for i in range(count))))


def scenarios(ids: list[str]) -> dict[str, Scenario]:
    paths = tuple(f"/Patient/{resource_id}" for resource_id in ids)
    return {
        "read": Scenario(name="read", method="GET", paths=paths),
        "update": Scenario(
            name="update",
            method="PUT",
            paths=paths,
            bodies=tuple(json.dumps(_patient(i, rid)).encode() for i, rid in enumerate(ids)),
        ),
        "create": Scenario(
            name="create", method="POST", paths=("/Patient",), bodies=(json.dumps(_patient(0)).encode(),)
        ),
    }


def target_for(interaction: str, concurrency: int, median_ms: float, throughput: float) -> Target | None:
    if interaction == "read" and concurrency == 1:
        return at_most(median_ms, READ_MEDIAN_MS, "ms median")
    if interaction == "read" and concurrency == 16:
        return at_least(throughput, READS_PER_S, "req/s")
    if interaction == "create" and concurrency == 16:
        return at_least(throughput, CREATES_PER_S, "req/s")
    return None


def measure(generator: LoadGenerator, port: int, scenario: Scenario, concurrency: int, *, quick: bool) -> LoadResult:
    """One warm-up, then rounds whose metrics are reduced to their medians (one round when quick)."""
    warmup_s, round_s, rounds = (0.5, 1.5, 1) if quick else (2.0, 4.0, 3)
    results = [
        generator.run(
            HOST,
            port,
            scenario,
            concurrency=concurrency,
            warmup_s=warmup_s if number == 0 else 0.0,
            duration_s=round_s,
        )
        for number in range(rounds)
    ]
    return median_of_rounds(results)


def run(generator: LoadGenerator, options: ServerOptions, *, quick: bool) -> list[Row]:
    count = 200 if quick else 1000
    embedded = options.store == "sqlite"
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="fhirflow-bench-") as tmp,
        LocalServer(data_dir=Path(tmp), extra_args=options.args()) as server,
    ):
        ids = asyncio.run(_preload(server.base_url, count))
        plans = scenarios(ids)
        # Reads first, creates last, so that reads and updates see the same store size.
        for interaction in ("read", "update", "create"):
            for concurrency in CONCURRENCIES:
                result = measure(generator, server.port, plans[interaction], concurrency, quick=quick)
                # The targets are for the embedded store; DynamoDB Local is a stand-in for the API only.
                target = target_for(interaction, concurrency, result.median_ms, result.throughput) if embedded else None
                rows.append(
                    Row.from_load(
                        f"crud ({options.store})",
                        f"{interaction} c={concurrency}",
                        result,
                        target=target,
                        note="" if quick else "median of 3 rounds",
                    )
                )
    return rows
