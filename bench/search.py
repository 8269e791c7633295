"""Search on the embedded server over HTTP: indexing throughput and query latency at ~200k resources.

The data is Synthea (``../shared/synthea``) replicated with new ids until there are ~200,000
resources (20,000 with ``--quick``): each patient bundle is posted again as a transaction whose
``urn:uuid`` ids are all fresh, so every copy is a new patient with its own encounters,
observations and claims; the practitioners and organizations are loaded once (PUT). Indexing
throughput is the resources per second of those transactions through the whole write path
(HTTP, validation, the bundle, the store, the search index), two bundles in flight.

Then each query runs sequentially over keep-alive HTTP, with its parameters drawn at random from
the loaded data (a patient, a family name...), and its median and 95th percentile are reported
against the issue's targets: p95 ≤ 50 ms for token, date and reference searches, ≤ 250 ms for
chains, ``_has`` and includes. Every query asks ``_total=accurate`` (the server's default).
"""

from __future__ import annotations

import json
import random
import re
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.crud import server_workers
from bench.loadgen import percentile
from bench.report import Row, Target, at_least
from fhirflow.local.launcher import LocalServer

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "synthea"
RESOURCES = 200_000
QUICK_RESOURCES = 20_000
INDEX_PER_S = 2000.0
FAST_P95_MS = 50.0
JOIN_P95_MS = 250.0
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# ---------------------------------------------------------------------------------------------
# Data


def _bundles() -> tuple[list[dict[str, Any]], list[str]]:
    """The shared bundles (practitioners, organizations) as PUTs, and each patient bundle's text
    with references to the shared resources made literal (``Practitioner/<uuid>``)."""
    shared, patients = [], []
    for path in sorted(SYNTHEA.glob("*.json")):
        if "Information" in path.name:
            shared.append(json.loads(path.read_text(encoding="utf-8")))
        else:
            patients.append(path.read_text(encoding="utf-8"))
    literal: dict[str, str] = {}
    for bundle in shared:
        for entry in bundle["entry"]:
            resource = entry["resource"]
            key = entry["fullUrl"].removeprefix("urn:uuid:")
            resource["id"] = key
            entry["request"] = {"method": "PUT", "url": f"{resource['resourceType']}/{key}"}
            literal[entry["fullUrl"]] = f"{resource['resourceType']}/{key}"
    pattern = re.compile("|".join(re.escape(f'"{url}"') for url in literal))
    patients = [pattern.sub(lambda m: f'"{literal[m.group(0)[1:-1]]}"', text) for text in patients]
    return shared, patients


class _Template:
    """A patient bundle's text cut at its uuids, so that each copy with fresh uuids is one join
    (the load generator shares the 2 cores with the server: a regex pass per copy cost ~7% of
    the server's CPU per resource)."""

    def __init__(self, text: str) -> None:
        self.pieces: list[str] = []
        self.slots: list[int] = []  # for each gap between pieces: which of the bundle's uuids
        numbers: dict[str, int] = {}
        start = 0
        for match in _UUID.finditer(text):
            self.pieces.append(text[start : match.start()])
            self.slots.append(numbers.setdefault(match.group(0), len(numbers)))
            start = match.end()
        self.pieces.append(text[start:])
        self.uuids = len(numbers)
        self.entries = text.count('"request"')

    def fresh(self) -> str:
        """The bundle with every uuid replaced by a new one (consistently within the bundle)."""
        new = [str(uuid.uuid4()) for _ in range(self.uuids)]
        parts = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            parts.append(new[slot])
            parts.append(piece)
        return "".join(parts)


def transactions(target: int) -> Iterator[tuple[bytes, int]]:
    """(body, entries) of the transactions that load about ``target`` resources."""
    shared, patients = _bundles()
    templates = [_Template(text) for text in patients]
    loaded = 0
    for bundle in shared:
        loaded += len(bundle["entry"])
        yield json.dumps(bundle).encode(), len(bundle["entry"])
    while loaded < target:
        for template in templates:
            loaded += template.entries
            yield template.fresh().encode(), template.entries
            if loaded >= target:
                return


def load(base_url: str, target: int, *, in_flight: int = 2) -> tuple[int, float]:
    """Post the transactions, ``in_flight`` at a time; (resources, seconds)."""
    work = transactions(target)
    lock = threading.Lock()
    done = [0]
    failures: list[str] = []

    def worker() -> None:
        headers = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
        with httpx.Client(base_url=base_url, timeout=600, headers=headers) as client:
            while True:
                with lock:
                    item = next(work, None)
                if item is None:
                    return
                reply = client.post("/", content=item[0])
                with lock:
                    if reply.status_code == 200:
                        done[0] += item[1]
                    else:
                        failures.append(f"{reply.status_code}: {reply.text[:200]}")

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"loading failed: {failures[0]}")
    return done[0], time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# Queries


@dataclass(frozen=True)
class Sample:
    patients: list[str]
    families: list[str]


def sample(client: httpx.Client) -> Sample:
    bundle = client.get("/Patient", params={"_count": 300, "_elements": "name", "_total": "none"}).json()
    patients = [e["resource"]["id"] for e in bundle.get("entry", [])]
    families = sorted(
        {n["family"] for e in bundle.get("entry", []) for n in e["resource"].get("name", []) if "family" in n}
    )
    if not patients or not families:
        raise RuntimeError("no patients were loaded")
    return Sample(patients, families)


Query = Callable[[Sample, random.Random], str]
LOINC = "http://loinc.org"

QUERIES: list[tuple[str, str, Query]] = [
    # (case, kind: fast | join, url)
    ("token: Observation?code (lab, ~1% of resources)", "fast", lambda s, r: f"/Observation?code={LOINC}|2069-3"),
    ("token: Observation?code (vital sign, ~3%)", "fast", lambda s, r: f"/Observation?code={LOINC}|8302-2"),
    ("token: Condition?code (SNOMED)", "fast", lambda s, r: "/Condition?code=http://snomed.info/sct|444814009"),
    ("reference: Observation?subject", "fast", lambda s, r: f"/Observation?subject=Patient/{r.choice(s.patients)}"),
    ("reference: Patient/x/Encounter", "fast", lambda s, r: f"/Patient/{r.choice(s.patients)}/Encounter"),
    (
        "date: Encounter?date (a month)",
        "fast",
        lambda s, r: f"/Encounter?date=20{r.randint(10, 19)}-0{r.randint(1, 9)}",
    ),
    (
        "date: Observation?date=ge (broad, ~40%)",
        "fast",
        lambda s, r: f"/Observation?date=ge20{r.randint(14, 16)}-01-01",
    ),
    (
        "date+reference: Observation?patient&date=ge&_sort=-date",
        "fast",
        lambda s, r: f"/Observation?patient={r.choice(s.patients)}&date=ge2015-01-01&_sort=-date",
    ),
    (
        "token+reference: Observation?patient&code",
        "fast",
        lambda s, r: f"/Observation?patient={r.choice(s.patients)}&code={LOINC}|29463-7",
    ),
    ("string: Patient?family", "fast", lambda s, r: f"/Patient?family={r.choice(s.families)[:4]}"),
    (
        "chain: Observation?subject:Patient.family&code",
        "join",
        lambda s, r: f"/Observation?subject:Patient.family={r.choice(s.families)}&code={LOINC}|29463-7",
    ),
    (
        "_has: Patient?_has:Observation:patient:code",
        "join",
        lambda s, r: f"/Patient?_has:Observation:patient:code={LOINC}|2093-3&family={r.choice(s.families)[:2]}",
    ),
    (
        "_include: Encounter?patient&_include=*",
        "join",
        lambda s, r: (
            f"/Encounter?patient={r.choice(s.patients)}&_include=Encounter:patient"
            "&_include=Encounter:participant&_include=Encounter:service-provider"
        ),
    ),
    (
        "_revinclude:iterate: Patient?_id&_revinclude=Encounter&Observation",
        "join",
        lambda s, r: (
            f"/Patient?_id={r.choice(s.patients)}&_revinclude=Encounter:patient"
            "&_revinclude:iterate=Observation:encounter&_count=10"
        ),
    ),
]


def latencies(
    client: httpx.Client, query: Query, data: Sample, repeats: int, rng: random.Random
) -> tuple[list[float], int]:
    """Milliseconds per request (after 3 warm-up requests) and the number of failed requests."""
    times: list[float] = []
    errors = 0
    for n in range(repeats + 3):
        url = query(data, rng)
        started = time.perf_counter()
        reply = client.get(url, params={"_total": "accurate"})
        elapsed = (time.perf_counter() - started) * 1000
        if reply.status_code != 200:
            errors += 1
        elif n >= 3:
            times.append(elapsed)
    return times, errors


def query_rows(base_url: str, *, repeats: int) -> list[Row]:
    rng = random.Random(20)
    rows = []
    with httpx.Client(base_url=base_url, timeout=60) as client:
        data = sample(client)
        for case, kind, query in QUERIES:
            times, errors = latencies(client, query, data, repeats, rng)
            p95 = percentile(times, 95) if times else float("nan")
            limit = FAST_P95_MS if kind == "fast" else JOIN_P95_MS
            target = Target(f"p95 ≤ {limit:g} ms", p95 <= limit)
            rows.append(
                Row(
                    bench="search",
                    case=case,
                    median_ms=statistics.median(times) if times else None,
                    p99_ms=percentile(times, 99) if times else None,
                    samples=len(times),
                    errors=errors,
                    target=target,
                    note=f"p95 {p95:.1f} ms",
                )
            )
    return rows


def run(*, quick: bool = False) -> list[Row]:
    """Load ~200k resources (20k when quick) into a fresh embedded server, then time the queries."""
    if not SYNTHEA.exists():
        raise RuntimeError(f"the Synthea bundles are not at {SYNTHEA}")
    target = QUICK_RESOURCES if quick else RESOURCES
    with (
        tempfile.TemporaryDirectory(prefix="fhirflow-bench-search-") as tmp,
        LocalServer(data_dir=Path(tmp), workers=server_workers()) as server,
    ):
        loaded, seconds = load(server.base_url, target)
        rate = loaded / seconds
        rows = [
            Row(
                bench="search",
                case=f"indexing: Synthea transactions ({loaded:,} resources)",
                throughput=rate,
                samples=loaded,
                target=at_least(rate, INDEX_PER_S, "resources/s"),
                note=f"{seconds:.0f} s through HTTP, validation, bundle, store and index",
            )
        ]
        rows += query_rows(server.base_url, repeats=20 if quick else 60)
    return rows


if __name__ == "__main__":
    import sys

    from rich.console import Console

    from bench.report import render

    render(run(quick="--quick" in sys.argv), "fhirflow search bench", Console(width=200))
