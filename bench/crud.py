"""CRUD over HTTP on the embedded server: read, update and create latency and throughput at concurrency 1 and 16.

The server runs as ``fhirflow serve`` does by default (one process per core, in child processes
of ``LocalServer``) and the load generator in this one, sharing the cores. Reads and updates
pick one of the pre-created Patients at random; creates all post the same HL7 example Patient
(``bench/data/patient.json``, the R4 ``Patient-example`` without its id).

Two legs, printed one under the other in the same table: the embedded store (``crud (sqlite)``,
with the issue's targets), then the same cases on ``fhirflow serve --store dynamodb`` against
DynamoDB Local started for the run (``crud (dynamodb-local)``, no targets: DynamoDB Local is a
stand-in for the API, whose transactions take tens of milliseconds here). The DynamoDB leg is
kept short — fewer pre-created Patients, one shorter round per case — and is skipped, with the
reason in the table, where Java or DynamoDB Local is missing. ``--store dynamodb`` with an
endpoint runs only that store, against the given server.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.loadgen import LoadGenerator, LoadResult, Scenario, median_of_rounds
from bench.report import Row, Target, at_least, at_most
from fhirflow.local import dynamodb_local
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


def server_workers() -> int:
    """What ``fhirflow serve`` runs by default: one process per core, at most 4."""
    return min(os.cpu_count() or 1, 4)


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


@dataclass(frozen=True)
class Leg:
    """One store's run: how many Patients to pre-create and how long to measure each case."""

    label: str
    preload: int
    warmup_s: float
    round_s: float
    rounds: int
    targets: bool

    @property
    def note(self) -> str:
        return f"median of {self.rounds} rounds" if self.rounds > 1 else f"one {self.round_s:g} s round"


def embedded_leg(store: str, *, quick: bool) -> Leg:
    if quick:
        return Leg(f"crud ({store})", 200, 0.5, 1.5, 1, targets=store == "sqlite")
    return Leg(f"crud ({store})", 1000, 2.0, 4.0, 3, targets=store == "sqlite")


def dynamodb_leg(*, quick: bool) -> Leg:
    """Short: DynamoDB Local commits a TransactWriteItems in 40-100 ms, so fewer samples come anyway."""
    if quick:
        return Leg("crud (dynamodb-local)", 50, 0.5, 1.5, 1, targets=False)
    return Leg("crud (dynamodb-local)", 200, 1.0, 3.0, 1, targets=False)


def measure(generator: LoadGenerator, port: int, scenario: Scenario, concurrency: int, leg: Leg) -> LoadResult:
    """One warm-up, then rounds whose metrics are reduced to their medians."""
    results = [
        generator.run(
            HOST,
            port,
            scenario,
            concurrency=concurrency,
            warmup_s=leg.warmup_s if number == 0 else 0.0,
            duration_s=leg.round_s,
        )
        for number in range(leg.rounds)
    ]
    return median_of_rounds(results)


def run_leg(generator: LoadGenerator, options: ServerOptions, leg: Leg) -> list[Row]:
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="fhirflow-bench-") as tmp,
        LocalServer(data_dir=Path(tmp), extra_args=options.args(), workers=server_workers()) as server,
    ):
        ids = asyncio.run(_preload(server.base_url, leg.preload))
        plans = scenarios(ids)
        # Reads first, creates last, so that reads and updates see the same store size.
        for interaction in ("read", "update", "create"):
            for concurrency in CONCURRENCIES:
                result = measure(generator, server.port, plans[interaction], concurrency, leg)
                # The targets are for the embedded store; DynamoDB Local is a stand-in for the API only.
                target = (
                    target_for(interaction, concurrency, result.median_ms, result.throughput) if leg.targets else None
                )
                case = f"{interaction} c={concurrency}"
                rows.append(Row.from_load(leg.label, case, result, target=target, note=leg.note))
    return rows


def run_on_dynamodb_local(generator: LoadGenerator, options: ServerOptions, *, quick: bool) -> list[Row]:
    """The same cases on ``serve --store dynamodb`` against a DynamoDB Local started for them."""
    leg = dynamodb_leg(quick=quick)
    reason = dynamodb_local.unavailable_reason()
    if reason is not None:
        return [Row(leg.label, "every case", note=f"skipped: {reason}")]
    table = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        with dynamodb_local.running() as endpoint:
            extra = (*options.extra_args, "--dynamodb-table", table)
            dynamodb = replace(options, store="dynamodb", dynamodb_endpoint=endpoint, extra_args=extra)
            return run_leg(generator, dynamodb, leg)
    except (RuntimeError, OSError) as error:  # the embedded rows stand; this leg says what went wrong
        return [Row(leg.label, "every case", note=f"failed: {error}"[:300])]


def run(generator: LoadGenerator, options: ServerOptions, *, quick: bool, dynamodb: bool = True) -> list[Row]:
    """The leg of ``options.store``; after the embedded one, the DynamoDB Local leg unless ``dynamodb`` is off."""
    rows = run_leg(generator, options, embedded_leg(options.store, quick=quick))
    if options.store == "sqlite" and dynamodb:
        rows += run_on_dynamodb_local(generator, options, quick=quick)
    return rows
