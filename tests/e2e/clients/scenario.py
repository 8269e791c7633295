"""One scenario that every real client in the suite plays (issue 15), and what it must observe.

Each client gets the same ``ScenarioInput`` (base URL, the identifier systems its resources use, the
loaded population, and the batch and transaction bodies), performs every operation with its own API
and reports what it saw as a dict keyed by operation (``OPERATIONS``). Python drivers return that
dict; the node drivers print it as JSON. ``failures`` compares a report with what the server must
have done, so the four clients are held to one standard and a broken operation is named, not hidden.

A client that lacks an operation reports ``{"unsupported": "<one-line reason>", ...}`` and still
reaches the same state with what it does offer (e.g. an update in place of a patch); the reason is
printed in the test's report, never skipped silently.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.support import FHIR_JSON

OPERATIONS = (
    "capabilities",
    "create",
    "read",
    "update",
    "patch",
    "history",
    "delete",
    "conditional_create",
    "conditional_update",
    "conditional_create_ambiguous",
    "search_paging",
    "include",
    "batch",
    "transaction",
    "everything",
)
POPULATION_SIZE = 320
PAGE_SIZE = 50
Outcome = dict[str, Any]
PATIENT_INTERACTIONS = {"read", "vread", "update", "patch", "delete", "history-instance", "create", "search-type"}


@dataclass(frozen=True)
class Population:
    """``POPULATION_SIZE`` Patients under one identifier system, and one Observation about the first."""

    system: str
    patient_ids: frozenset[str]
    probe_patient_id: str
    observation_id: str


@dataclass(frozen=True)
class ScenarioInput:
    base: str
    client: str
    system: str
    """The identifier system of what this client creates (never the population's)."""
    population: Population
    page_size: int = PAGE_SIZE
    batch: dict[str, Any] = field(default_factory=dict)
    transaction: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "system": self.system,
            "populationSystem": self.population.system,
            "populationSize": len(self.population.patient_ids),
            "probePatientId": self.population.probe_patient_id,
            "pageSize": self.page_size,
            "batch": self.batch,
            "transaction": self.transaction,
        }


def load_population(base: str) -> Population:
    """Load the population in one transaction (fast: one request, one SQL transaction)."""
    system = f"urn:fhirflow:clients:{uuid.uuid4().hex}"
    patients = [
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": system, "value": f"p{number}"}],
                "name": [{"family": f"Population{number}"}],
            },
            "request": {"method": "POST", "url": "Patient"},
        }
        for number in range(POPULATION_SIZE)
    ]
    observation = {
        "resource": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "population probe"},
            "subject": {"reference": patients[0]["fullUrl"]},
        },
        "request": {"method": "POST", "url": "Observation"},
    }
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [*patients, observation]}
    reply = httpx.post(base, json=bundle, headers={"Content-Type": FHIR_JSON}, timeout=120)
    assert reply.status_code == 200, reply.text
    ids = [location_id(entry["response"]["location"]) for entry in reply.json()["entry"]]
    return Population(system=system, patient_ids=frozenset(ids[:-1]), probe_patient_id=ids[0], observation_id=ids[-1])


def scenario_input(base: str, client: str, population: Population) -> ScenarioInput:
    system = f"urn:fhirflow:clients:{client}:{uuid.uuid4().hex}"
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "identifier": [{"system": system, "value": "batch"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": f"Patient/{population.probe_patient_id}"}},
            {"request": {"method": "GET", "url": f"Patient/absent-{uuid.uuid4().hex}"}},
        ],
    }
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_url,
                "resource": {"resourceType": "Patient", "identifier": [{"system": system, "value": "transaction"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "transaction"},
                    "subject": {"reference": patient_url},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    return ScenarioInput(
        base=base, client=client, system=system, population=population, batch=batch, transaction=transaction
    )


def failures(given: ScenarioInput, report: dict[str, Any]) -> list[str]:
    """Every operation whose observed outcome is not what the server must have done, one line each."""
    problems = []
    for operation in OPERATIONS:
        outcome = report.get(operation)
        if outcome is None:
            problems.append(f"{operation}: not reported")
        elif "error" in outcome:
            problems.append(f"{operation}: {outcome['error']}")
        else:
            wrong = _EXPECT[operation](given, report, outcome)
            problems.extend(f"{operation}: {line}" for line in wrong)
    return problems


def unsupported(report: dict[str, Any]) -> dict[str, str]:
    """The operations a client does not offer, with its reason."""
    return {name: outcome["unsupported"] for name, outcome in report.items() if "unsupported" in outcome}


def run_steps(*steps: tuple[str, Callable[[], Outcome]]) -> dict[str, Outcome]:
    """Play the steps in order; a step that raises is reported with what was raised, and the rest still run."""
    report: dict[str, Outcome] = {}
    for name, action in steps:
        try:
            report[name] = action()
        except Exception as exc:  # the report names what the client raised
            report[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return report


def capability_summary(statement: dict[str, Any]) -> Outcome:
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    return {
        "resourceType": statement["resourceType"],
        "fhirVersion": statement["fhirVersion"],
        "patientInteractions": sorted(i["code"] for i in patient["interaction"]),
    }


def entries_by_mode(bundle: dict[str, Any]) -> Outcome:
    found: dict[str, list[str]] = {"match": [], "include": []}
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        found[entry["search"]["mode"]].append(f"{resource['resourceType']}/{resource['id']}")
    return found


def bundle_summary(bundle: dict[str, Any]) -> Outcome:
    statuses = [int(entry["response"]["status"].split()[0]) for entry in bundle["entry"]]
    return {"type": bundle["type"], "statuses": statuses}


def everything_summary(bundle: dict[str, Any]) -> Outcome:
    resources = sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", []))
    return {"type": bundle["type"], "resources": resources}


async def run_steps_async(*steps: tuple[str, Callable[[], Awaitable[Outcome]]]) -> dict[str, Outcome]:
    """``run_steps`` for an asyncio client."""
    report: dict[str, Outcome] = {}
    for name, action in steps:
        try:
            report[name] = await action()
        except Exception as exc:  # the report names what the client raised
            report[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return report


def _mismatches(outcome: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    return [
        f"{key} is {outcome.get(key)!r}, expected {value!r}"
        for key, value in expected.items()
        if outcome.get(key) != value
    ]


def _capabilities(_given: ScenarioInput, _report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    wrong = _mismatches(out, {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"})
    missing = PATIENT_INTERACTIONS - set(out.get("patientInteractions", ()))
    return wrong + ([f"Patient interactions lack {sorted(missing)}"] if missing else [])


def _create(_given: ScenarioInput, _report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    return _mismatches(out, {"versionId": "1"}) + ([] if out.get("id") else ["no id"])


def _read(given: ScenarioInput, report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    return _mismatches(out, {"id": report["create"].get("id"), "versionId": "1", "identifierSystem": given.system})


def _update(_given: ScenarioInput, report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    return _mismatches(out, {"id": report["create"].get("id"), "versionId": "2", "gender": "female"})


def _patch(_given: ScenarioInput, report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    expected = {"id": report["create"].get("id"), "versionId": "3", "gender": "other", "birthDate": "1990-01-01"}
    return _mismatches(out, expected)


def _history(_given: ScenarioInput, _report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    return _mismatches(out, {"type": "history", "versions": ["3", "2", "1"]})


def _delete(_given: ScenarioInput, _report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    """A read after the delete fails as deleted: 410 Gone, issue code ``deleted`` (http.html#delete)."""
    expected: dict[str, Any] = {"issueCode": "deleted"}
    if "status" in out:
        expected["status"] = 410
    return _mismatches(out, expected)


def _conditional_create(_given: ScenarioInput, _report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    first = out.get("firstId")
    return _mismatches(out, {"secondId": first, "matches": 1}) + ([] if first else ["no id"])


def _conditional_update(_given: ScenarioInput, _report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    first = out.get("firstId")
    expected = {"firstVersion": "1", "secondId": first, "secondVersion": "2", "gender": "female", "matches": 1}
    return _mismatches(out, expected) + ([] if first else ["no id"])


def _conditional_create_ambiguous(_given: ScenarioInput, _report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    """Criteria matching the whole population: 412, issue code ``multiple-matches``, nothing created (the
    paging count, taken after, would be one more)."""
    expected: dict[str, Any] = {"issueCode": "multiple-matches"}
    if "status" in out:
        expected["status"] = 412
    return _mismatches(out, expected)


def _search_paging(given: ScenarioInput, _report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    ids = out.get("ids", [])
    wrong = _mismatches(
        {"count": len(ids), "distinct": len(set(ids))}, {"count": POPULATION_SIZE, "distinct": POPULATION_SIZE}
    )
    if set(ids) != given.population.patient_ids:
        wrong.append("the ids found are not the population's")
    if "pages" in out:
        wrong += _mismatches(out, {"pages": math.ceil(POPULATION_SIZE / given.page_size)})
    return wrong


def _include(given: ScenarioInput, _report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    population = given.population
    expected = {
        "match": [f"Observation/{population.observation_id}"],
        "include": [f"Patient/{population.probe_patient_id}"],
    }
    return _mismatches(out, expected)


def _batch(_given: ScenarioInput, _report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    return _mismatches(out, {"type": "batch-response", "statuses": [201, 200, 404]})


def _transaction(_given: ScenarioInput, _report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    patient = out.get("patientId")
    expected = {"type": "transaction-response", "statuses": [201, 201], "observationSubject": f"Patient/{patient}"}
    return _mismatches(out, expected) + ([] if patient and out.get("observationId") else ["no ids"])


def _everything(_given: ScenarioInput, report: dict[str, Any], out: dict[str, Any]) -> list[str]:
    created = report["transaction"]
    expected = sorted([f"Patient/{created.get('patientId')}", f"Observation/{created.get('observationId')}"])
    return _mismatches(out, {"type": "searchset", "resources": expected})


def location_id(location: str) -> str:
    """``[base/]Patient/abc/_history/1`` → ``abc``."""
    return location.split("/_history", maxsplit=1)[0].rstrip("/").split("/")[-1]


_EXPECT = {
    "capabilities": _capabilities,
    "create": _create,
    "read": _read,
    "update": _update,
    "patch": _patch,
    "history": _history,
    "delete": _delete,
    "conditional_create": _conditional_create,
    "conditional_update": _conditional_update,
    "conditional_create_ambiguous": _conditional_create_ambiguous,
    "search_paging": _search_paging,
    "include": _include,
    "batch": _batch,
    "transaction": _transaction,
    "everything": _everything,
}
