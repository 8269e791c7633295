"""Generate the Postman collection and environments in postman/ from the route table.

Development-time only: ``python tools/gen_postman.py`` writes the files, ``--check`` exits 1 when
the committed ones differ from what the route table gives now (tests/unit/test_postman_collection.py
runs the same comparison, so the collection never drifts from the routes).

How the route table drives it: every request below names the route it exercises, and its path is
matched with the route table (fhirflow.routes.ROUTE_TABLE, the same matcher the local gateway
uses) — a request whose path lands on another route, or a step naming a route that no longer
exists, stops the generator. Every route of the table (the ``/tenant/{tenant}`` copies aside: point
``baseUrl`` at a tenant's base to run them) is exercised by at least one request; a route with no
scripted step yet gets a generated request in the folder "Other routes" that checks only that the
server answers it without a 5xx. The steps add what a table cannot know: bodies, the order of a
scenario, and the assertions (Postman v2.1 test scripts, run by newman in make test).

Output is deterministic (no random ids, sorted environment keys), so regenerating gives the
committed bytes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhirflow.routes import ROUTE_TABLE, ROUTES, TENANT_PREFIX  # noqa: E402

OUT_DIR = ROOT / "postman"
COLLECTION = "fhirflow.postman_collection.json"
LOCAL_ENV = "fhirflow-local.postman_environment.json"
AWS_ENV = "fhirflow-aws.postman_environment.json"
SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"

FHIR_JSON = "application/fhir+json"
IDENT = "urn:fhirflow:newman|{{runTag}}"
"""The identifier of this run's Patient: unique per run, so runs against one server never meet."""
MAX_POLLS = 120
POLL_MS = 500
"""A polled job gets at most MAX_POLLS status requests, POLL_MS apart (a minute), then fails."""


@dataclass(frozen=True)
class Step:
    route: tuple[str, str]
    """(method, pattern) of the route in fhirflow.routes.ROUTES this request exercises."""
    name: str
    path: str
    """After ``{{baseUrl}}``, with ``{{variables}}``; no query string."""
    tests: list[str]
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None
    """JSON (sent as FHIR JSON), a str (sent raw, with the Content-Type in ``headers``), or a
    list of (key, value) pairs (sent as a form)."""
    prerequest: list[str] = field(default_factory=list)


# ---- test-script snippets (Postman sandbox JavaScript) ------------------------------------------


def status(*codes: int) -> str:
    wanted = ", ".join(str(c) for c in codes)
    title = "status is " + " or ".join(str(c) for c in codes)
    return f'pm.test("{title}", () => pm.expect(pm.response.code).to.be.oneOf([{wanted}]));'


def check(title: str, expression: str) -> str:
    return f"pm.test({json.dumps(title)}, () => pm.expect({expression}).to.be.true);"


def save(variable: str, expression: str) -> str:
    return f"pm.collectionVariables.set({json.dumps(variable)}, String({expression}));"


JSON_BODY = "const body = pm.response.json();"
LOCATION_ID = "(pm.response.headers.get('Content-Location') || '').split('/').pop()"
"""The job id at the end of an async kick-off's status URL (async.html, bulk data export.html)."""


def bundle(kind: str, *, at_least: int = 0) -> list[str]:
    lines = [JSON_BODY, check(f"a {kind} Bundle", f"body.resourceType === 'Bundle' && body.type === '{kind}'")]
    if at_least:
        lines.append(check(f"at least {at_least} entries", f"(body.entry || []).length >= {at_least}"))
    return lines


def outcome_of(code: int) -> list[str]:
    return [status(code), JSON_BODY, check("an OperationOutcome", "body.resourceType === 'OperationOutcome'")]


def polled(name: str, counter: str, done: list[str]) -> list[str]:
    """A status URL polled with setNextRequest until it stops answering 202 (bounded)."""
    return [
        f"const polls = Number(pm.collectionVariables.get({json.dumps(counter)}) || '0');",
        f"if (pm.response.code === 202 && polls < {MAX_POLLS}) {{",
        f"  pm.collectionVariables.set({json.dumps(counter)}, String(polls + 1));",
        f"  postman.setNextRequest({json.dumps(name)});",
        f"  setTimeout(() => {{}}, {POLL_MS});",
        "} else {",
        *("  " + line for line in done),
        "}",
    ]


# ---- the scenario --------------------------------------------------------------------------------

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:fhirflow:newman", "value": "{{runTag}}"}],
    "name": [{"family": "Newman", "given": ["Postman"]}],
    "gender": "female",
}
P = "{{patientId}}"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
SUB_CODE = "urn:fhirflow:newman|{{runTag}}-sub"
PARAMETERS_META_TAG = {
    "resourceType": "Parameters",
    "parameter": [{"name": "meta", "valueMeta": {"tag": [{"system": "urn:fhirflow:newman", "code": "tagged"}]}}],
}


def capabilities() -> list[Step]:
    return [
        Step(
            ("GET", "/metadata"),
            "CapabilityStatement",
            "/metadata",
            prerequest=[
                "// A new tag per run (this is the first request): the run's resources are found by it",
                "// and never meet another run's, whatever a Postman workspace kept from the last one.",
                "const tag = Date.now().toString(36) + Math.random().toString(36).slice(2, 8);",
                "pm.collectionVariables.set('runTag', tag);",
            ],
            tests=[
                status(200),
                JSON_BODY,
                check(
                    "a CapabilityStatement for FHIR 4.0.1",
                    "body.resourceType === 'CapabilityStatement' && body.fhirVersion === '4.0.1'",
                ),
                check("it lists Patient", "body.rest[0].resource.some((r) => r.type === 'Patient')"),
            ],
        ),
        Step(
            ("GET", "/.well-known/smart-configuration"),
            "SMART configuration",
            "/.well-known/smart-configuration",
            tests=[
                status(200, 404),
                "if (pm.response.code === 200) {",
                "  " + JSON_BODY,
                "  " + check("it lists capabilities", "Array.isArray(body.capabilities)"),
                "}",
            ],
        ),
    ]


def crud() -> list[Step]:
    updated = {**PATIENT, "id": P, "gender": "male"}
    return [
        Step(
            ("POST", "/{type}"),
            "Create Patient",
            "/Patient",
            body=PATIENT,
            tests=[
                status(201),
                JSON_BODY,
                check("it has a server-assigned id", "typeof body.id === 'string' && body.id.length > 0"),
                check("Location names it", "pm.response.headers.get('Location').includes('/Patient/' + body.id)"),
                check("version 1", "pm.response.headers.get('ETag') === 'W/\"1\"'"),
                save("patientId", "body.id"),
            ],
        ),
        Step(
            ("GET", "/{type}/{id}"),
            "Read Patient",
            f"/Patient/{P}",
            tests=[status(200), JSON_BODY, check("the Patient created", "body.name[0].family === 'Newman'")],
        ),
        Step(
            ("PUT", "/{type}/{id}"),
            "Update Patient (If-Match)",
            f"/Patient/{P}",
            headers=[("If-Match", 'W/"1"')],
            body=updated,
            tests=[status(200), JSON_BODY, check("version 2", "body.meta.versionId === '2' && body.gender === 'male'")],
        ),
        Step(
            ("PATCH", "/{type}/{id}"),
            "Patch Patient (JSON Patch)",
            f"/Patient/{P}",
            headers=[("Content-Type", "application/json-patch+json")],
            body=json.dumps([{"op": "replace", "path": "/gender", "value": "other"}]),
            tests=[
                status(200),
                JSON_BODY,
                check("version 3", "body.meta.versionId === '3' && body.gender === 'other'"),
            ],
        ),
        Step(
            ("GET", "/{type}/{id}/_history/{vid}"),
            "Vread Patient version 1",
            f"/Patient/{P}/_history/1",
            tests=[
                status(200),
                JSON_BODY,
                check("version 1 as it was", "body.meta.versionId === '1' && body.gender === 'female'"),
            ],
        ),
        Step(
            ("POST", "/{type}"),
            "Conditional create (If-None-Exist) finds it",
            "/Patient",
            headers=[("If-None-Exist", f"identifier={IDENT}")],
            body=PATIENT,
            tests=[
                status(200),
                JSON_BODY,
                check("the existing Patient", "body.id === pm.collectionVariables.get('patientId')"),
            ],
        ),
        Step(
            ("PUT", "/{type}"),
            "Conditional update",
            "/Patient",
            query=[("identifier", IDENT)],
            body={**updated, "birthDate": "1970-01-01"},
            tests=[
                status(200),
                JSON_BODY,
                check(
                    "the same Patient, updated",
                    "body.id === pm.collectionVariables.get('patientId') && body.birthDate === '1970-01-01'",
                ),
            ],
        ),
        Step(
            ("PATCH", "/{type}"),
            "Conditional patch",
            "/Patient",
            query=[("identifier", IDENT)],
            headers=[("Content-Type", "application/json-patch+json")],
            body=json.dumps([{"op": "replace", "path": "/birthDate", "value": "1971-02-03"}]),
            tests=[status(200), JSON_BODY, check("patched", "body.birthDate === '1971-02-03'")],
        ),
        Step(
            ("POST", "/{type}/$validate"),
            "Validate (type level)",
            "/Patient/$validate",
            body={"resourceType": "Patient", "gender": "robot"},
            tests=[
                *outcome_of(200),
                check("the bad code is named", "body.issue.some((i) => i.severity === 'error')"),
            ],
        ),
        Step(
            ("POST", "/{type}/{id}/$validate"),
            "Validate (instance level)",
            f"/Patient/{P}/$validate",
            body={**PATIENT, "id": P},
            tests=outcome_of(200),
        ),
        Step(
            ("POST", "/{type}/{id}/$meta-add"),
            "$meta-add a tag",
            f"/Patient/{P}/$meta-add",
            body=PARAMETERS_META_TAG,
            tests=[status(200), JSON_BODY, check("the tag is there", "JSON.stringify(body).includes('tagged')")],
        ),
        Step(
            ("GET", "/{type}/{id}/$meta"),
            "$meta (GET)",
            f"/Patient/{P}/$meta",
            tests=[
                status(200),
                JSON_BODY,
                check(
                    "Parameters with the tag",
                    "body.resourceType === 'Parameters' && JSON.stringify(body).includes('tagged')",
                ),
            ],
        ),
        Step(
            ("POST", "/{type}/{id}/$meta"),
            "$meta (POST)",
            f"/Patient/{P}/$meta",
            body={"resourceType": "Parameters"},
            tests=[status(200), JSON_BODY, check("Parameters", "body.resourceType === 'Parameters'")],
        ),
        Step(
            ("GET", "/{type}/{id}/_history/{vid}/$meta"),
            "$meta of version 1 (GET)",
            f"/Patient/{P}/_history/1/$meta",
            tests=[status(200), JSON_BODY, check("no tag on version 1", "!JSON.stringify(body).includes('tagged')")],
        ),
        Step(
            ("POST", "/{type}/{id}/_history/{vid}/$meta"),
            "$meta of version 1 (POST)",
            f"/Patient/{P}/_history/1/$meta",
            body={"resourceType": "Parameters"},
            tests=[status(200), JSON_BODY, check("Parameters", "body.resourceType === 'Parameters'")],
        ),
        Step(
            ("POST", "/{type}/{id}/$meta-delete"),
            "$meta-delete the tag",
            f"/Patient/{P}/$meta-delete",
            body=PARAMETERS_META_TAG,
            tests=[status(200), JSON_BODY, check("the tag is gone", "!JSON.stringify(body).includes('tagged')")],
        ),
        Step(
            ("POST", "/{type}"),
            "Create Observation of the Patient",
            "/Observation",
            body={
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "urn:fhirflow:newman", "code": "{{runTag}}"}]},
                "subject": {"reference": f"Patient/{P}"},
                "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
            },
            tests=[status(201), JSON_BODY, save("observationId", "body.id")],
        ),
    ]


def search() -> list[Step]:
    one_match = [
        status(200),
        *bundle("searchset"),
        check(
            "exactly one match",
            "body.total === 1 || (body.entry || []).filter((e) => e.search.mode === 'match').length === 1",
        ),
    ]
    return [
        Step(
            ("GET", "/{type}"),
            "Search Patient by identifier",
            "/Patient",
            query=[("identifier", IDENT)],
            tests=one_match,
        ),
        Step(
            ("GET", "/{type}"),
            "Search Observation with _include",
            "/Observation",
            query=[("code", "urn:fhirflow:newman|{{runTag}}"), ("_include", "Observation:subject")],
            tests=[
                status(200),
                *bundle("searchset", at_least=2),
                check(
                    "the Patient is included",
                    "body.entry.some((e) => e.search.mode === 'include' && e.resource.resourceType === 'Patient')",
                ),
            ],
        ),
        Step(
            ("POST", "/{type}/_search"),
            "Search Patient (POST _search)",
            "/Patient/_search",
            body=[("identifier", IDENT)],
            tests=one_match,
        ),
        Step(
            ("GET", "/"),
            "System search (_type, _id)",
            "/",
            query=[("_type", "Patient"), ("_id", P)],
            tests=one_match,
        ),
        Step(
            ("POST", "/_search"),
            "System search (POST _search)",
            "/_search",
            body=[("_type", "Patient"), ("_id", P)],
            tests=one_match,
        ),
        Step(
            ("GET", "/{type}/{id}/{compartment_type}"),
            "Compartment search",
            f"/Patient/{P}/Observation",
            tests=one_match,
        ),
        Step(
            ("POST", "/{type}/{id}/{compartment_type}/_search"),
            "Compartment search (POST _search)",
            f"/Patient/{P}/Observation/_search",
            body=[("code", "urn:fhirflow:newman|{{runTag}}")],
            tests=one_match,
        ),
        Step(
            ("GET", "/{type}/{id}/$everything"),
            "Patient $everything (GET)",
            f"/Patient/{P}/$everything",
            tests=[
                status(200),
                *bundle("searchset", at_least=2),
                check(
                    "the Patient and its Observation",
                    "body.entry.some((e) => e.resource.resourceType === 'Observation')",
                ),
            ],
        ),
        Step(
            ("POST", "/{type}/{id}/$everything"),
            "Patient $everything (POST)",
            f"/Patient/{P}/$everything",
            body={"resourceType": "Parameters"},
            tests=[status(200), *bundle("searchset", at_least=2)],
        ),
        Step(
            ("GET", "/{type}/$everything"),
            "All patients $everything (GET)",
            "/Patient/$everything",
            query=[("_count", "5")],
            tests=[status(200), *bundle("searchset", at_least=1)],
        ),
        Step(
            ("POST", "/{type}/$everything"),
            "All patients $everything (POST)",
            "/Patient/$everything",
            body={"resourceType": "Parameters", "parameter": [{"name": "_type", "valueCode": "Patient"}]},
            tests=[status(200), *bundle("searchset", at_least=1)],
        ),
    ]


def history() -> list[Step]:
    return [
        Step(
            ("GET", "/{type}/{id}/_history"),
            "Instance history",
            f"/Patient/{P}/_history",
            tests=[
                status(200),
                *bundle("history", at_least=3),
                check(
                    "newest first",
                    "Number(body.entry[0].resource.meta.versionId) > Number(body.entry[1].resource.meta.versionId)",
                ),
            ],
        ),
        Step(
            ("GET", "/{type}/_history"),
            "Type history",
            "/Patient/_history",
            query=[("_count", "5")],
            tests=[status(200), *bundle("history", at_least=1)],
        ),
        Step(
            ("GET", "/_history"),
            "System history",
            "/_history",
            query=[("_count", "5")],
            tests=[status(200), *bundle("history", at_least=1)],
        ),
    ]


def bundles() -> list[Step]:
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{P}"}},
            {
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:fhirflow:newman", "value": "{{runTag}}-batch"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f1c2f4e-7d2a-4d0e-9a53-2b3c4d5e6f70",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:fhirflow:newman", "value": "{{runTag}}-tx"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "newman transaction"},
                    "subject": {"reference": "urn:uuid:6f1c2f4e-7d2a-4d0e-9a53-2b3c4d5e6f70"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    async_name = "Async transaction status (poll)"
    return [
        Step(
            ("POST", "/"),
            "Batch",
            "/",
            body=batch,
            tests=[
                status(200),
                *bundle("batch-response"),
                check(
                    "read 200, create 201",
                    "body.entry[0].response.status.startsWith('200')"
                    " && body.entry[1].response.status.startsWith('201')",
                ),
            ],
        ),
        Step(
            ("POST", "/"),
            "Transaction with urn:uuid references",
            "/",
            body=transaction,
            tests=[
                status(200),
                *bundle("transaction-response"),
                check("both created", "body.entry.every((e) => e.response.status.startsWith('201'))"),
                check(
                    "the reference points at the new Patient",
                    "/Observation\\//.test(body.entry[1].response.location)"
                    " && (body.entry[1].resource === undefined"
                    " || body.entry[1].resource.subject.reference.startsWith('Patient/'))",
                ),
            ],
        ),
        Step(
            ("POST", "/"),
            "Async transaction kick-off",
            "/",
            headers=[("Prefer", "respond-async")],
            body={**transaction, "entry": transaction["entry"][:1]},
            tests=[
                status(202),
                check("a status URL", "(pm.response.headers.get('Content-Location') || '').includes('/_async/')"),
                save("asyncJob", LOCATION_ID),
                save("asyncPolls", "0"),
            ],
        ),
        Step(
            ("GET", "/_async/{job}"),
            async_name,
            "/_async/{{asyncJob}}",
            tests=polled(
                async_name,
                "asyncPolls",
                [status(200), JSON_BODY, check("the transaction-response", "body.type === 'transaction-response'")],
            ),
        ),
    ]


def export() -> list[Step]:
    kick = [("Prefer", "respond-async"), ("Accept", FHIR_JSON)]
    poll_name = "Export status (poll)"

    def kicked(variable: str) -> list[str]:
        return [
            status(202),
            check("a status URL", "(pm.response.headers.get('Content-Location') || '').includes('/_export/')"),
            save(variable, LOCATION_ID),
        ]

    def cancel(name: str, variable: str) -> Step:
        return Step(("DELETE", "/_export/{job}"), name, f"/_export/{{{{{variable}}}}}", tests=[status(202)])

    return [
        Step(
            ("GET", "/$export"),
            "System export kick-off",
            "/$export",
            query=[("_type", "Patient,Observation")],
            headers=kick,
            tests=[*kicked("exportJob"), save("exportPolls", "0")],
        ),
        Step(
            ("GET", "/_export/{job}"),
            poll_name,
            "/_export/{{exportJob}}",
            tests=polled(
                poll_name,
                "exportPolls",
                [
                    status(200),
                    JSON_BODY,
                    check("a manifest with files", "Array.isArray(body.output) && body.output.length > 0"),
                    check(
                        "Patient and Observation files",
                        "['Patient', 'Observation'].every((t) => body.output.some((o) => o.type === t))",
                    ),
                    save("exportFile", "body.output.find((o) => o.type === 'Patient').url.split('/').pop()"),
                ],
            ),
        ),
        Step(
            ("GET", "/_export/{job}/{file}"),
            "Export file (NDJSON)",
            "/_export/{{exportJob}}/{{exportFile}}",
            headers=[("Accept", "application/fhir+ndjson")],
            tests=[
                status(200),
                "const lines = pm.response.text().split('\\n').filter((l) => l.trim());",
                check(
                    "NDJSON of Patients",
                    "lines.length > 0 && lines.every((l) => JSON.parse(l).resourceType === 'Patient')",
                ),
                check(
                    "this run's Patient is in it",
                    "lines.some((l) => JSON.parse(l).id === pm.collectionVariables.get('patientId'))",
                ),
            ],
        ),
        cancel("Export job delete", "exportJob"),
        Step(
            ("POST", "/$export"),
            "System export kick-off (POST Parameters)",
            "/$export",
            headers=kick,
            body={"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Patient"}]},
            tests=kicked("exportJob2"),
        ),
        cancel("Export cancel (POST kick-off)", "exportJob2"),
        Step(
            ("GET", "/{type}/$export"),
            "Patient export kick-off",
            "/Patient/$export",
            headers=kick,
            tests=kicked("exportJob3"),
        ),
        cancel("Export cancel (Patient)", "exportJob3"),
        Step(
            ("POST", "/{type}/$export"),
            "Patient export kick-off (POST)",
            "/Patient/$export",
            headers=kick,
            body={"resourceType": "Parameters"},
            tests=kicked("exportJob4"),
        ),
        cancel("Export cancel (Patient POST)", "exportJob4"),
        Step(
            ("POST", "/{type}"),
            "Create Group for export",
            "/Group",
            body={
                "resourceType": "Group",
                "type": "person",
                "actual": True,
                "member": [{"entity": {"reference": f"Patient/{P}"}}],
            },
            tests=[status(201), JSON_BODY, save("groupId", "body.id")],
        ),
        Step(
            ("GET", "/{type}/{id}/$export"),
            "Group export kick-off",
            "/Group/{{groupId}}/$export",
            headers=kick,
            tests=kicked("exportJob5"),
        ),
        cancel("Export cancel (Group)", "exportJob5"),
        Step(
            ("POST", "/{type}/{id}/$export"),
            "Group export kick-off (POST)",
            "/Group/{{groupId}}/$export",
            headers=kick,
            body={"resourceType": "Parameters"},
            tests=kicked("exportJob6"),
        ),
        cancel("Export cancel (Group POST)", "exportJob6"),
    ]


def reindex() -> list[Step]:
    poll_name = "Reindex status (poll)"
    started = [
        status(202),
        check("a status URL", "(pm.response.headers.get('Content-Location') || '').includes('/_reindex/')"),
    ]
    return [
        Step(
            ("POST", "/{type}/$reindex"),
            "Reindex Patient kick-off",
            "/Patient/$reindex",
            tests=[*started, save("reindexJob", LOCATION_ID), save("reindexPolls", "0")],
        ),
        Step(
            ("GET", "/_reindex/{job}"),
            poll_name,
            "/_reindex/{{reindexJob}}",
            tests=polled(
                poll_name,
                "reindexPolls",
                [status(200), JSON_BODY, check("Parameters", "body.resourceType === 'Parameters'")],
            ),
        ),
        Step(("POST", "/$reindex"), "Reindex everything kick-off", "/$reindex", tests=started),
    ]


def binary() -> list[Step]:
    text = "hello from newman {{runTag}}"
    return [
        Step(
            ("POST", "/{type}"),
            "Create Binary (raw bytes)",
            "/Binary",
            headers=[("Content-Type", "text/plain")],
            body=text,
            tests=[status(201), save("binaryId", "pm.response.headers.get('Location').match(/Binary\\/([^/]+)/)[1]")],
        ),
        Step(
            ("GET", "/{type}/{id}"),
            "Read Binary in its own type",
            "/Binary/{{binaryId}}",
            headers=[("Accept", "text/plain")],
            tests=[
                status(200),
                check(
                    "the same bytes",
                    "pm.response.text() === 'hello from newman ' + pm.collectionVariables.get('runTag')",
                ),
                check("its own content type", "pm.response.headers.get('Content-Type').startsWith('text/plain')"),
            ],
        ),
        Step(
            ("GET", "/{type}/{id}"),
            "Read Binary as FHIR JSON",
            "/Binary/{{binaryId}}",
            headers=[("Accept", FHIR_JSON)],
            tests=[
                status(200),
                JSON_BODY,
                check(
                    "a Binary resource", "body.resourceType === 'Binary' && body.contentType.startsWith('text/plain')"
                ),
            ],
        ),
    ]


def subscriptions() -> list[Step]:
    return [
        Step(
            ("POST", "/{type}"),
            "Create Subscription (rest-hook)",
            "/Subscription",
            body={
                "resourceType": "Subscription",
                "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
                "status": "requested",
                "reason": "newman",
                "criteria": "https://fhirflow.dev/fhir/SubscriptionTopic/Observation",
                "_criteria": {
                    "extension": [
                        {"url": f"{BACKPORT}/backport-filter-criteria", "valueString": f"Observation?code={SUB_CODE}"}
                    ]
                },
                "channel": {
                    "type": "rest-hook",
                    "endpoint": "{{subscriptionEndpoint}}",
                    "payload": FHIR_JSON,
                    "_payload": {
                        "extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": "id-only"}]
                    },
                },
            },
            tests=[status(201), JSON_BODY, save("subscriptionId", "body.id")],
        ),
        Step(
            ("POST", "/{type}"),
            "Create an Observation the Subscription is about",
            "/Observation",
            body={
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "urn:fhirflow:newman", "code": "{{runTag}}-sub"}]},
            },
            tests=[status(201), JSON_BODY, save("subscribedObservationId", "body.id")],
        ),
        Step(
            ("GET", "/{type}/{id}"),
            "Read Subscription",
            "/Subscription/{{subscriptionId}}",
            tests=[
                status(200),
                JSON_BODY,
                check("a known status", "['requested', 'active', 'error', 'off'].includes(body.status)"),
            ],
        ),
        Step(
            ("GET", "/Subscription/{id}/$status"),
            "Subscription $status",
            "/Subscription/{{subscriptionId}}/$status",
            tests=[
                status(200),
                *bundle("searchset", at_least=1),
                "const params = body.entry[0].resource.parameter;",
                check("a status", "params.some((p) => p.name === 'status' && typeof p.valueCode === 'string')"),
            ],
        ),
        Step(
            ("GET", "/Subscription/$status"),
            "Subscriptions $status (type level)",
            "/Subscription/$status",
            tests=[status(200), *bundle("searchset", at_least=1)],
        ),
        Step(
            ("GET", "/Subscription/{id}/$events"),
            "Subscription $events",
            "/Subscription/{{subscriptionId}}/$events",
            query=[("eventsSinceNumber", "1")],
            tests=[
                status(200),
                *bundle("history"),
                check(
                    "the Observation's event",
                    "JSON.stringify(body).includes(pm.collectionVariables.get('subscribedObservationId'))",
                ),
            ],
        ),
        Step(
            ("DELETE", "/{type}/{id}"),
            "Delete Subscription",
            "/Subscription/{{subscriptionId}}",
            tests=[status(200, 204)],
        ),
    ]


def cleanup() -> list[Step]:
    return [
        Step(
            ("DELETE", "/{type}/{id}"), "Delete Observation", "/Observation/{{observationId}}", tests=[status(200, 204)]
        ),
        Step(
            ("DELETE", "/{type}/{id}"),
            "Delete the subscribed Observation",
            "/Observation/{{subscribedObservationId}}",
            tests=[status(200, 204)],
        ),
        Step(("DELETE", "/{type}/{id}"), "Delete Patient", f"/Patient/{P}", tests=[status(200, 204)]),
        Step(("GET", "/{type}/{id}"), "Read deleted Patient is 410", f"/Patient/{P}", tests=outcome_of(410)),
        Step(
            ("DELETE", "/{type}"),
            "Conditional delete (the batch's Patient)",
            "/Patient",
            query=[("identifier", "urn:fhirflow:newman|{{runTag}}-batch")],
            tests=[status(200, 204)],
        ),
        Step(
            ("GET", "/{type}"),
            "The batch's Patient is gone",
            "/Patient",
            query=[("identifier", "urn:fhirflow:newman|{{runTag}}-batch")],
            tests=[
                status(200),
                JSON_BODY,
                check("no match", "(body.entry || []).filter((e) => e.search.mode === 'match').length === 0"),
            ],
        ),
    ]


FOLDERS: tuple[tuple[str, Any], ...] = (
    ("Capabilities", capabilities),
    ("CRUD and operations", crud),
    ("Search", search),
    ("History", history),
    ("Batch and transaction", bundles),
    ("Bulk export", export),
    ("Reindex", reindex),
    ("Binary", binary),
    ("Subscriptions", subscriptions),
    ("Cleanup", cleanup),
)

# ---- building the collection ---------------------------------------------------------------------

AUTH_PREREQUEST = [
    "// OAuth 2 client credentials (SMART Backend Services style, client secret): when the environment",
    "// names a tokenUrl, fetch a token with its scope once and reuse it until shortly before it expires.",
    "const tokenUrl = pm.variables.get('tokenUrl');",
    "if (tokenUrl) {",
    "  const now = Date.now();",
    "  const expires = Number(pm.variables.get('accessTokenExpires') || '0');",
    "  const sendWithToken = (token) => pm.request.headers.upsert({ key: 'Authorization', value: 'Bearer ' + token });",
    "  if (pm.variables.get('accessToken') && now < expires) {",
    "    sendWithToken(pm.variables.get('accessToken'));",
    "  } else {",
    "    pm.sendRequest({",
    "      url: tokenUrl,",
    "      method: 'POST',",
    "      header: {",
    "        'Content-Type': 'application/x-www-form-urlencoded',",
    "        Authorization: 'Basic ' + btoa(pm.variables.get('clientId') + ':' + pm.variables.get('clientSecret')),",
    "      },",
    "      body: { mode: 'urlencoded', urlencoded: [",
    "        { key: 'grant_type', value: 'client_credentials' },",
    "        { key: 'scope', value: pm.variables.get('scope') || '' },",
    "      ] },",
    "    }, (error, reply) => {",
    "      if (error || reply.code !== 200) {",
    "        console.error('token request failed', error || reply.code);",
    "        return;",
    "      }",
    "      const token = reply.json();",
    "      pm.collectionVariables.set('accessToken', token.access_token);",
    "      pm.collectionVariables.set('accessTokenExpires', String(now + 1000 * ((token.expires_in || 300) - 30)));",
    "      sendWithToken(token.access_token);",
    "    });",
    "  }",
    "}",
]
COLLECTION_TESTS = ['pm.test("no server error", () => pm.expect(pm.response.code).to.be.below(500));']


def _script(kind: str, lines: list[str]) -> dict[str, Any]:
    return {"listen": kind, "script": {"type": "text/javascript", "exec": lines}}


def _concrete(path: str) -> str:
    """The path as the server would see it, for matching with the route table."""
    return re.sub(r"\{\{[^}]+\}\}", "x0", path)


def _url(path: str, query: list[tuple[str, str]]) -> dict[str, Any]:
    raw = "{{baseUrl}}" + path
    if query:
        raw += "?" + "&".join(f"{k}={v}" for k, v in query)
    url: dict[str, Any] = {"raw": raw, "host": ["{{baseUrl}}"], "path": [s for s in path.split("/") if s]}
    if query:
        url["query"] = [{"key": k, "value": v} for k, v in query]
    return url


def _item(step: Step) -> dict[str, Any]:
    route, _ = ROUTE_TABLE.match(step.route[0], _concrete(step.path))
    if (route.method, route.pattern) != step.route:
        raise SystemExit(
            f"{step.name!r}: {step.route[0]} {step.path} is routed to {route.pattern}, not {step.route[1]}"
        )
    headers = list(step.headers)
    names = {k.lower() for k, _ in headers}
    body: dict[str, Any] | None = None
    if isinstance(step.body, str):
        body = {"mode": "raw", "raw": step.body}
    elif isinstance(step.body, list):
        body = {"mode": "urlencoded", "urlencoded": [{"key": k, "value": v, "type": "text"} for k, v in step.body]}
        if "content-type" not in names:
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    elif step.body is not None:
        body = {"mode": "raw", "raw": json.dumps(step.body, indent=2), "options": {"raw": {"language": "json"}}}
        if "content-type" not in names:
            headers.append(("Content-Type", FHIR_JSON))
    if "accept" not in {k.lower() for k, _ in headers}:
        headers.append(("Accept", FHIR_JSON))
    request: dict[str, Any] = {
        "method": step.route[0],
        "header": [{"key": k, "value": v} for k, v in headers],
        "url": _url(step.path, step.query),
        "description": f"Route `{route.method} {route.pattern}` ({route.service}: {route.interaction}).",
    }
    if body is not None:
        request["body"] = body
    events = [_script("test", step.tests)]
    if step.prerequest:
        events.insert(0, _script("prerequest", step.prerequest))
    return {"name": step.name, "event": events, "request": request}


def _generic(method: str, pattern: str) -> Step:
    path = pattern.replace("{type}", "Patient").replace("{id}", P).replace("{compartment_type}", "Observation")
    path = re.sub(r"\{(\w+)\}", r"{{\1}}", path)
    return Step((method, pattern), f"{method} {pattern}", path, tests=COLLECTION_TESTS)


def table_routes() -> list[tuple[str, str]]:
    """The routes the collection covers: the table's, without the tenant-prefixed copies."""
    return [(r.method, r.pattern) for r in ROUTES if not r.pattern.startswith(TENANT_PREFIX)]


def build_collection() -> dict[str, Any]:
    known = set(table_routes())
    folders: list[dict[str, Any]] = []
    covered: set[tuple[str, str]] = set()
    names: set[str] = set()
    for title, steps in FOLDERS:
        items = []
        for step in steps():
            if step.route not in known:
                raise SystemExit(f"{step.name!r} names {step.route}, which is not in fhirflow.routes")
            if step.name in names:
                raise SystemExit(f"two requests are named {step.name!r} (setNextRequest goes by name)")
            names.add(step.name)
            covered.add(step.route)
            items.append(_item(step))
        folders.append({"name": title, "item": items})
    missing = [route for route in table_routes() if route not in covered]
    if missing:
        folders.append(
            {
                "name": "Other routes",
                "description": "Routes of the table with no scripted step yet: answered without a 5xx.",
                "item": [_item(_generic(*route)) for route in missing],
            }
        )
    variables = [
        "runTag",
        "patientId",
        "observationId",
        "groupId",
        "binaryId",
        "subscriptionId",
        "subscribedObservationId",
    ]
    variables += ["asyncJob", "exportJob", "exportFile", "reindexJob", "accessToken", "accessTokenExpires"]
    return {
        "info": {
            "_postman_id": "0b6d6c1e-6a9e-4c84-9a6e-f1c0f10f1000",
            "name": "fhirflow",
            "description": (
                "Every route of fhirflow's route table (fhirflow/routes.py), as a scenario with tests: capabilities, "
                "CRUD and operations, search, history, batch and transaction (and async), bulk export with polling, "
                "reindex, Binary, subscriptions, cleanup. Generated by tools/gen_postman.py: do not edit by hand. "
                "Pick the local or the AWS environment; with tokenUrl set, a client-credentials token is fetched "
                "with the environment's scope."
            ),
            "schema": SCHEMA,
        },
        "event": [_script("prerequest", AUTH_PREREQUEST), _script("test", COLLECTION_TESTS)],
        "variable": [{"key": v, "value": ""} for v in variables],
        "item": folders,
    }


def _environment(env_id: str, name: str, values: dict[str, tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": env_id,
        "name": name,
        "values": [
            {"key": key, "value": value, "type": kind, "enabled": True} for key, (value, kind) in sorted(values.items())
        ],
        "_postman_variable_scope": "environment",
    }


SMART_SCOPES = "system/*.cruds"
"""SMART v2 system scopes the AWS run needs (every interaction on every type); narrower ones work for
the folders they allow (system/Patient.rs system/Observation.rs for search, for example)."""


def build_environments() -> dict[str, dict[str, Any]]:
    local = _environment(
        "0b6d6c1e-6a9e-4c84-9a6e-f1c0f10f1001",
        "fhirflow local",
        {
            "baseUrl": ("http://127.0.0.1:8080", "default"),
            # A rest-hook endpoint: any https URL is accepted (delivery to it is the server's business);
            # a local receiver over http needs FHIRFLOW_SUBSCRIPTIONS_ALLOW_HTTP/_PRIVATE on the server.
            "subscriptionEndpoint": ("https://example.org/fhirflow-hook", "default"),
            "tokenUrl": ("", "default"),
        },
    )
    aws = _environment(
        "0b6d6c1e-6a9e-4c84-9a6e-f1c0f10f1002",
        "fhirflow AWS",
        {
            "baseUrl": ("https://API_ID.execute-api.REGION.amazonaws.com/prod", "default"),
            "subscriptionEndpoint": ("https://example.org/fhirflow-hook", "default"),
            "tokenUrl": ("https://YOUR_IDP/oauth2/token", "default"),
            "clientId": ("", "default"),
            "clientSecret": ("", "secret"),
            "scope": (SMART_SCOPES, "default"),
        },
    )
    return {LOCAL_ENV: local, AWS_ENV: aws}


def rendered() -> dict[str, str]:
    """File name → the exact text to commit."""
    files = {COLLECTION: build_collection(), **build_environments()}
    return {name: json.dumps(content, indent=2, ensure_ascii=False) + "\n" for name, content in files.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files differ, write nothing")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where to write (default: postman/)")
    args = parser.parse_args()
    stale = []
    for name, text in rendered().items():
        target = args.out / name
        if args.check:
            if not target.exists() or target.read_text("utf-8") != text:
                stale.append(name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, "utf-8")
    if stale:
        print(f"out of date with the route table: {', '.join(stale)}; run python tools/gen_postman.py")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
