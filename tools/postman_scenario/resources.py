"""The scenario's first half: capabilities, CRUD and the resource operations, search, history."""

from __future__ import annotations

import json

from postman_scenario.steps import (
    IDENT,
    JSON_BODY,
    P,
    Step,
    bundle,
    check,
    outcome_of,
    save,
    status,
)

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:fhirflow:newman", "value": "{{runTag}}"}],
    "name": [{"family": "Newman", "given": ["Postman"]}],
    "gender": "female",
}
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
