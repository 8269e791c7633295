"""Subscriptions: how many changes per second the matcher keeps up with, at 10 and 10,000 subscriptions.

In-process, one thread (one core): a :class:`SubscriptionIndex` holds the active subscriptions
and every change is one ``match`` call, as the subscription worker makes it for each committed
change. The changes are the Synthea resources (``../shared/synthea``: 16 types) and four types of
the R4 examples (MedicationDispense, ServiceRequest, MedicationAdministration, Task), 20 types in
all, in a shuffled order. The subscriptions' criteria are the realistic kinds (issue 12): a code,
a subject, a category, a date, taken from values the changes really have so that some match.
Most (88%) are about one patient (subject and code, subject alone, subject and category), the
patient drawn from a population of 2,000 (:data:`POPULATION`); the rest are population-level (code
and category, code and a date, category and a date), and one in 500 has only a date (no
discriminator: evaluated for every change of its type). Practitioners and organizations are
watched by identifier.

Targets: at least 2,000 changes/s with 10,000 subscriptions, and within 2x of the rate with 10.
Ten subscriptions cover only ten of the twenty types, so most changes meet no subscription at all
and cost a dictionary lookup; the run with one subscription per type, where every change is
extracted and matched, shows what the number of subscriptions itself costs. The three runs take
turns in five rounds and each reports its best round, so that the neighbours' load on a shared
machine weighs on all three alike.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import Row, Target, at_least
from fhirflow.searchparams.extract import extract_index_values
from fhirflow.searchparams.values import DateValue, ReferenceValue, TokenValue
from fhirflow_bundle.references import rewrite
from fhirflow_subscriptions.criteria import CompiledCriteria, compile_criteria
from fhirflow_subscriptions.index import SubscriptionIndex

SHARED = Path(__file__).resolve().parents[2] / "shared"
SYNTHEA = SHARED / "synthea"
EXAMPLES = SHARED / "fhir-r4" / "examples"
EXTRA_TYPES = ("MedicationDispense", "ServiceRequest", "MedicationAdministration", "Task")
CHANGES_PER_S = 2000.0
MAX_SLOWDOWN = 2.0
ROUNDS = 5
CODES = ("code", "vaccine-code", "medication", "type", "class")
SUBJECTS = ("subject", "patient", "beneficiary", "organization")
DATES = ("date", "onset-date", "authoredon", "created", "whenhandedover", "effective-time", "period", "started")
ALL = frozenset(("create", "update", "delete"))
POPULATION = 2000
"""Patients the subscriptions are about: a deployment with 10,000 subscriptions serves many more
patients than the 40 whose changes the stream holds."""
OWN_PATIENT = 0.1
"""How often a patient-specific subscription names the patient of the resource it was drawn from."""


def changes() -> list[dict[str, Any]]:
    """The Synthea resources (``urn:uuid`` references made ``Type/id``) and the extra types'
    examples, copied under new ids and pointed at Synthea patients, about 200 of each."""
    entries: list[dict[str, Any]] = []
    for path in sorted(SYNTHEA.glob("*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        entries.extend(bundle.get("entry", []))
    mapping = {}
    for entry in entries:
        uuid = entry["fullUrl"].removeprefix("urn:uuid:")
        entry["resource"]["id"] = uuid
        mapping[entry["fullUrl"]] = f"{entry['resource']['resourceType']}/{uuid}"
    out = [rewrite(entry["resource"], mapping, where="Bundle.entry") for entry in entries]
    patients = [f"Patient/{r['id']}" for r in out if r["resourceType"] == "Patient"]
    rng = random.Random(12)
    for rtype in EXTRA_TYPES:
        examples = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(EXAMPLES.glob(f"{rtype}-*.json"))]
        examples = [e for e in examples if e.get("resourceType") == rtype]
        for n in range(200):
            copy = json.loads(json.dumps(examples[n % len(examples)]))
            copy["id"] = f"{rtype.lower()}-{n}"
            subject = {"reference": rng.choice(patients)}
            for key in ("subject", "for"):
                if key in copy or (key == "subject" and rtype != "Task"):
                    copy[key] = subject
            out.append(copy)
    return out


@dataclass
class Facets:
    """What criteria can be written from one resource: (parameter, value) per kind."""

    codes: list[tuple[str, str]]
    subjects: list[tuple[str, str]]
    categories: list[tuple[str, str]]
    dates: list[tuple[str, str]]
    identifiers: list[str]


def facets(resource: dict[str, Any]) -> Facets:
    values = extract_index_values(resource)

    def tokens(code: str) -> list[tuple[str, str]]:
        return [
            (code, f"{v.system}|{v.code}" if v.system else v.code)
            for v in values.get(code, [])
            if isinstance(v, TokenValue) and v.code and "," not in v.code and "," not in (v.system or "")
        ]

    codes = next((found for code in CODES if (found := tokens(code))), [])
    subjects = next(
        (
            found
            for code in SUBJECTS
            if (
                found := [
                    (code, f"{v.type}/{v.id}")
                    for v in values.get(code, [])
                    if isinstance(v, ReferenceValue) and v.type and v.id and not v.url
                ]
            )
        ),
        [],
    )
    dates = next(
        (
            found
            for code in DATES
            if (found := [(code, _year(v.low)) for v in values.get(code, []) if isinstance(v, DateValue)])
        ),
        [],
    )
    identifiers = [value for _, value in tokens("identifier")]
    return Facets(codes, subjects, tokens("category"), dates, identifiers)


def _year(ms: int) -> str:
    return time.strftime("%Y", time.gmtime(max(ms, 0) / 1000))


def criteria_for(rtype: str, facet: Facets, rng: random.Random) -> str:
    """One realistic criteria string on ``rtype`` from a resource's facets: mostly about one
    patient (a patient from :data:`POPULATION`, the resource's own one time in ten), the rest
    population-level (a code, a category, a date)."""
    kinds = [
        (50, ("subjects", "codes")),
        (25, ("subjects",)),
        (12.8, ("subjects", "categories")),
        (5, ("codes", "categories")),
        (5, ("codes", "dates")),
        (2, ("categories", "dates")),
        (0.2, ("dates",)),
    ]
    usable = [(weight, wanted) for weight, wanted in kinds if all(getattr(facet, kind) for kind in wanted)]
    parts = []
    if usable:
        roll = rng.uniform(0, sum(weight for weight, _ in usable))
        for weight, wanted in usable:  # noqa: B007 - the loop picks ``wanted``
            roll -= weight
            if roll <= 0:
                break
        for kind in wanted:
            code, value = rng.choice(getattr(facet, kind))
            if kind == "subjects" and rng.random() >= OWN_PATIENT:
                value = f"{value.partition('/')[0]}/population-{rng.randrange(POPULATION)}"
            parts.append(f"{code}=ge{value}" if kind == "dates" else f"{code}={value}")
    elif facet.identifiers:  # a practitioner, an organization: watched one by one
        parts.append("identifier=" + rng.choice(facet.identifiers))
    return "&".join(parts).replace("|", "%7C")


def subscriptions(count: int, pool: dict[str, list[dict[str, Any]]], rng: random.Random) -> list[CompiledCriteria]:
    """``count`` compiled criteria spread evenly over the pool's types."""
    types = sorted(pool)
    out = []
    for n in range(count):
        rtype = types[n % len(types)]
        source = rng.choice(pool[rtype])
        out.append(compile_criteria(rtype, criteria_for(rtype, facets(source), rng)))
    return out


def measure(index: SubscriptionIndex, stream: list[dict[str, Any]], seconds: float) -> tuple[float, int, int]:
    """Changes per second over at least ``seconds``, changes matched, notifications."""
    done = notified = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for resource in stream:
            found: list[Hashable] = index.match(
                tenant="default", resource_type=resource["resourceType"], operation="update", resource=resource
            )
            notified += len(found)
            done += 1
        if time.perf_counter() >= deadline:
            break
    return done / (time.perf_counter() - started), done, notified


def run(*, quick: bool = False) -> list[Row]:
    if not SYNTHEA.exists() or not EXAMPLES.exists():
        raise RuntimeError(f"the Synthea bundles and R4 examples are not under {SHARED}")
    rng = random.Random(2024)
    stream = changes()
    rng.shuffle(stream)
    pool: dict[str, list[dict[str, Any]]] = {}
    for resource in stream:
        pool.setdefault(resource["resourceType"], []).append(resource)
    stream = stream[:3000] if quick else stream
    seconds = 3.0 if quick else 15.0
    rows, rates = [], {}
    types = len(pool)
    runs = []
    for count in (10, types, 10_000):
        index = SubscriptionIndex()
        compiled = subscriptions(count, pool, rng)
        for key, criteria in enumerate(compiled):
            index.put(
                key, tenant="default", resource_type=criteria.resource_type, interactions=ALL, criteria=[criteria]
            )
        measure(index, stream[:200], 0.0)  # warm the extraction plans
        runs.append((count, index, len({c.resource_type for c in compiled})))
    # Rounds alternate between the three so that a neighbour's load on this shared machine hits all
    # of them alike; each reports its best round.
    best: dict[int, tuple[float, int, int]] = {}
    for _ in range(ROUNDS):
        for count, index, _covered in runs:
            found = measure(index, stream, seconds / ROUNDS)
            if count not in best or found[0] > best[count][0]:
                best[count] = found
    for count, _index, covered in runs:
        rate, done, notified = best[count]
        rates[count] = rate
        target = at_least(rate, CHANGES_PER_S, "changes/s") if count == 10_000 else None
        rows.append(
            Row(
                bench="subscriptions",
                case=f"matching: {count:,} subscriptions on {covered} of {types} types",
                throughput=rate,
                samples=done,
                target=target,
                note=f"{notified / done:.2f} notifications per change; best of {ROUNDS} rounds",
            )
        )
    slowdown = rates[10] / rates[10_000]
    rows.append(
        Row(
            bench="subscriptions",
            case="matching: 10,000 vs 10 subscriptions",
            target=Target(f"≤ {MAX_SLOWDOWN:g}x slower", slowdown <= MAX_SLOWDOWN),
            note=f"{slowdown:.2f}x slower (10 subscriptions leave half the types, and most changes, unmatched)",
        )
    )
    rows.append(
        Row(
            bench="subscriptions",
            case=f"matching: 10,000 vs {types} subscriptions (one per type)",
            note=f"{rates[types] / rates[10_000]:.2f}x slower: every change is matched in both",
        )
    )
    return rows


if __name__ == "__main__":
    import sys

    from rich.console import Console

    from bench.report import render

    render(run(quick="--quick" in sys.argv), "fhirflow subscriptions bench", Console(width=200))
