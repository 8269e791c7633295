"""``bench --only bombs``: /metadata latency on one server process while resource bombs go off.

The server runs one process (so the bombs and /metadata share it) with a short read budget.
One thread sends the bombs of the resource-bomb suite (tests/e2e/test_resource_bombs.py) over
and over; another asks for /metadata every 20 ms. The target: /metadata p99 ≤ 100 ms meanwhile.
"""

from __future__ import annotations

import random
import statistics
import string
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.report import Row, at_most
from fhirflow.local.launcher import LocalServer

SYS = "urn:bomb"
BUDGET_SECONDS = 0.5
FHIR_JSON = "application/fhir+json"


def batch(resources: list[dict[str, Any]]) -> dict[str, Any]:
    entries = []
    for resource in resources:
        if "id" in resource:
            request = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        else:
            request = {"method": "POST", "url": resource["resourceType"]}
        entries.append({"resource": resource, "request": request})
    return {"resourceType": "Bundle", "type": "batch", "entry": entries}


WIDE = "urn:wide"
"""A value set of 999 codes: one is within the limit, ten in one search are 9,990 conditions."""


def value_sets(depth: int) -> list[dict[str, Any]]:
    """``urn:vs:N`` includes ``urn:vs:N-1`` twice (2^N expansions if nothing is shared),
    ``urn:loop`` includes itself, and :data:`WIDE` lists 999 codes."""
    concepts = [{"code": f"c{n}"} for n in range(20)]
    sets: list[dict[str, Any]] = [_value_set("urn:vs:0", [{"system": SYS, "concept": concepts}])]
    for level in range(1, depth + 1):
        below = f"urn:vs:{level - 1}"
        sets.append(_value_set(f"urn:vs:{level}", [{"valueSet": [below]}, {"valueSet": [below, below]}]))
    sets.append(_value_set("urn:loop", [{"valueSet": ["urn:loop"]}]))
    sets.append(_value_set(WIDE, [{"system": SYS, "concept": [{"code": f"c{n}"} for n in range(999)]}]))
    return sets


def _value_set(url: str, include: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "ValueSet", "status": "active", "url": url, "compose": {"include": include}}


def flat_code_system(children: int) -> dict[str, Any]:
    concept = [{"code": "root", "concept": [{"code": f"c{n}"} for n in range(children)]}]
    return {"resourceType": "CodeSystem", "status": "active", "content": "complete", "url": SYS, "concept": concept}


def dense_graph(size: int) -> list[dict[str, Any]]:
    """Observations that each name every other as a member."""
    ids = [f"g{n}" for n in range(size)]
    return [
        {
            "resourceType": "Observation",
            "id": id_,
            "status": "final",
            "code": {"text": "panel"},
            "hasMember": [{"reference": f"Observation/{other}"} for other in ids if other != id_],
        }
        for id_ in ids
    ]


def long_names(count: int, length: int) -> list[dict[str, Any]]:
    rnd = random.Random(7)
    family = ["".join(rnd.choices(string.ascii_lowercase, k=length)) for _ in range(count)]
    return [{"resourceType": "Patient", "name": [{"family": name}]} for name in family]


def coded_observations(codes: tuple[int, ...]) -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Observation",
            "id": f"o{n}",
            "status": "final",
            "code": {"coding": [{"system": SYS, "code": f"c{n}"}]},
        }
        for n in codes
    ]


def load(http: httpx.Client) -> None:
    """The data the bombs need, in a few batches."""
    loads = [
        long_names(1500, 4000),
        value_sets(15),
        [flat_code_system(60_000)],
        coded_observations((1, 5, 25)),
        dense_graph(60),
    ]
    for resources in loads:
        reply = http.post("/", json=batch(resources))
        reply.raise_for_status()
        failed = [e for e in reply.json()["entry"] if e["response"]["status"][:1] != "2"]
        if failed:
            raise RuntimeError(f"loading the bomb data failed: {failed[0]['response']}")


def contains_values(count: int) -> str:
    return ",".join("zz" + "".join(random.Random(n).choices(string.ascii_lowercase, k=6)) for n in range(count))


def many_leaves(count: int) -> str:
    """``count`` leaf codes of the flat code system, as one ``:below`` value list."""
    return ",".join(f"{SYS}|c{n}" for n in range(count))


def bombs(patient_id: str) -> list[tuple[str, str, Any]]:
    """(method, path, params or body) of each bomb (params as a dict, or pairs when repeated)."""
    operation = [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.name.where(family.matches('^(a+)+$')).family"},
        {"name": "value", "valueString": "X"},
    ]
    return [
        ("GET", "/Observation", {"code:in": "urn:vs:15"}),
        ("GET", "/Observation", {"code:in": "urn:loop"}),
        ("GET", "/Observation", {"code:below": f"{SYS}|root"}),
        ("GET", "/Observation", {"code:below": many_leaves(900)}),
        ("GET", "/Observation", [("code:in", WIDE)] * 10),
        (
            "PATCH",
            f"/Patient/{patient_id}",
            {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": operation}]},
        ),
        ("GET", "/Patient", {"name:contains": contains_values(400), "_total": "accurate"}),
        ("GET", "/Observation", {"subject:Patient." + "link:Patient." * 9 + "name": "x"}),
        ("GET", "/Observation", {"_id": "g0", "_include:iterate": "Observation:has-member"}),
    ]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def run(*, quick: bool) -> list[Row]:
    seconds = 10.0 if quick else 30.0
    with tempfile.TemporaryDirectory(prefix="fhirflow-bombs-") as tmp:
        env = {"FHIRFLOW_REQUEST_TIMEOUT_SECONDS": str(BUDGET_SECONDS)}
        with LocalServer(data_dir=Path(tmp), workers=1, env=env) as server:
            base = server.base_url
            with httpx.Client(base_url=base, headers={"Content-Type": FHIR_JSON}, timeout=120) as http:
                load(http)
                patient = http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "a" * 60 + "!"}]})
                requests = bombs(patient.json()["id"])
            stop = threading.Event()
            statuses: list[int] = []

            def fire() -> None:
                with httpx.Client(base_url=base, headers={"Content-Type": FHIR_JSON}, timeout=60) as http:
                    while not stop.is_set():
                        for method, path, payload in requests:
                            if method == "GET":
                                reply = http.get(path, params=payload)
                            else:
                                reply = http.request(method, path, json=payload)
                            statuses.append(reply.status_code)

            bomber = threading.Thread(target=fire, daemon=True)
            latencies: list[float] = []
            errors = 0
            with httpx.Client(base_url=base, timeout=60) as http:
                http.get("/metadata")
                bomber.start()
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    errors += http.get("/metadata").status_code != 200
                    latencies.append((time.perf_counter() - started) * 1000)
                    time.sleep(0.02)
            stop.set()
            bomber.join(120)
    p99 = percentile(latencies, 99)
    server_errors = sum(1 for status in statuses if status >= 500 and status != 503)
    note = f"{len(statuses)} bombs, {server_errors} 5xx other than 503 too-costly"
    return [
        Row(
            "bombs",
            "/metadata during bombs",
            median_ms=statistics.median(latencies),
            p99_ms=p99,
            samples=len(latencies),
            errors=errors + server_errors,
            target=at_most(p99, 100, "ms p99"),
            note=note,
        )
    ]
