"""The scenario's second half: batch and transaction, bulk export, reindex, Binary, subscriptions,
cleanup. Jobs are polled with setNextRequest loops (bounded: postman_scenario.steps.polled)."""

from __future__ import annotations

from postman_scenario.steps import (
    FHIR_JSON,
    JSON_BODY,
    LOCATION_ID,
    P,
    Step,
    bundle,
    check,
    outcome_of,
    polled,
    save,
    status,
)

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
SUB_CODE = "urn:fhirflow:newman|{{runTag}}-sub"


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
