"""The scenario (``scenario.py``) played with fhirpy's own API (``SyncFHIRClient``)."""

from __future__ import annotations

import json
from typing import Any

from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, ResourceNotFound

from tests.e2e.clients.scenario import (
    Outcome,
    ScenarioInput,
    bundle_summary,
    capability_summary,
    entries_by_mode,
    everything_summary,
    location_id,
    run_steps,
)


def play(given: ScenarioInput) -> dict[str, Outcome]:
    fhir = SyncFHIRClient(given.base)
    system = given.system
    state: dict[str, Any] = {}

    def capabilities() -> Outcome:
        statement = fhir.execute("metadata", method="get")
        return capability_summary(statement)

    def create() -> Outcome:
        patient = fhir.resource("Patient", identifier=[{"system": system, "value": "crud"}], gender="male")
        patient.save()
        state["patient"] = patient
        return {"id": patient.id, "versionId": patient["meta"]["versionId"]}

    def read() -> Outcome:
        found = fhir.reference("Patient", state["patient"].id).to_resource()
        return {
            "id": found.id,
            "versionId": found["meta"]["versionId"],
            "identifierSystem": found["identifier"][0]["system"],
        }

    def update() -> Outcome:
        patient = state["patient"]
        patient["gender"] = "female"
        patient.save()
        again = fhir.reference("Patient", patient.id).to_resource()
        return {"id": again.id, "versionId": patient["meta"]["versionId"], "gender": again["gender"]}

    def patch() -> Outcome:
        # fhirpy's patch form: the changed fields as a partial resource (application/json, a merge patch).
        patched = fhir.patch("Patient", state["patient"].id, gender="other", birthDate="1990-01-01")
        return {k: patched.get(k) for k in ("id", "gender", "birthDate")} | {"versionId": patched["meta"]["versionId"]}

    def history() -> Outcome:
        bundle = fhir.execute(f"Patient/{state['patient'].id}/_history", method="get")
        return {"type": bundle["type"], "versions": [e["resource"]["meta"]["versionId"] for e in bundle["entry"]]}

    def delete() -> Outcome:
        fhir.delete("Patient", state["patient"].id)
        try:
            fhir.reference("Patient", state["patient"].id).to_resource()
        except ResourceNotFound as gone:  # fhirpy raises this for 404 and 410 alike, with the body
            return {"issueCode": json.loads(str(gone))["issue"][0]["code"]}
        return {"error": "the deleted resource is still read"}

    def conditional_create() -> Outcome:
        # get_or_create is fhirpy's conditional create: POST Patient?identifier=... (the server reads the
        # query as If-None-Exist).
        search = fhir.resources("Patient").search(identifier=f"{system}|conditional-create")
        body = {"identifier": [{"system": system, "value": "conditional-create"}]}
        first, created = search.get_or_create(fhir.resource("Patient", **body))
        second, created_again = search.get_or_create(fhir.resource("Patient", **body))
        assert (created, created_again) == (True, False), (created, created_again)
        return {"firstId": first.id, "secondId": second.id, "matches": search.count()}

    def conditional_update() -> Outcome:
        search = fhir.resources("Patient").search(identifier=f"{system}|conditional-update")
        body = {"identifier": [{"system": system, "value": "conditional-update"}]}
        first, _ = search.update(fhir.resource("Patient", **body, gender="male"))
        second, _ = search.update(fhir.resource("Patient", **body, gender="female"))
        return {
            "firstId": first.id,
            "firstVersion": first["meta"]["versionId"],
            "secondId": second.id,
            "secondVersion": second["meta"]["versionId"],
            "gender": second["gender"],
            "matches": search.count(),
        }

    def conditional_create_ambiguous() -> Outcome:
        population = given.population.system
        search = fhir.resources("Patient").search(identifier=f"{population}|")
        try:
            search.get_or_create(fhir.resource("Patient", identifier=[{"system": population, "value": "ambiguous"}]))
        except MultipleResourcesFound as several:  # fhirpy raises this for a 412, with the body
            return {"status": 412, "issueCode": json.loads(str(several))["issue"][0]["code"]}
        return {"error": "created although the criteria match the whole population"}

    def search_paging() -> Outcome:
        # Iterating a search set follows the Bundle's next links to the end.
        search = fhir.resources("Patient").search(identifier=f"{given.population.system}|").limit(given.page_size)
        return {"ids": [patient.id for patient in search]}

    def include() -> Outcome:
        search = (
            fhir.resources("Observation")
            .search(subject=f"Patient/{given.population.probe_patient_id}")
            .include("Observation", "subject")
        )
        return entries_by_mode(search.fetch_raw())

    def batch() -> Outcome:
        return bundle_summary(fhir.execute("", method="post", data=given.batch))

    def transaction() -> Outcome:
        answer = fhir.execute("", method="post", data=given.transaction)
        summary = bundle_summary(answer)
        patient_id, observation_id = (location_id(e["response"]["location"]) for e in answer["entry"])
        observation = fhir.reference("Observation", observation_id).to_resource()
        state["everything"] = patient_id
        return summary | {
            "patientId": patient_id,
            "observationId": observation_id,
            "observationSubject": observation["subject"]["reference"],
        }

    def everything() -> Outcome:
        bundle = fhir.reference("Patient", state["everything"]).execute("$everything", method="get")
        return everything_summary(bundle)

    return run_steps(
        ("capabilities", capabilities),
        ("create", create),
        ("read", read),
        ("update", update),
        ("patch", patch),
        ("history", history),
        ("delete", delete),
        ("conditional_create", conditional_create),
        ("conditional_update", conditional_update),
        ("conditional_create_ambiguous", conditional_create_ambiguous),
        ("search_paging", search_paging),
        ("include", include),
        ("batch", batch),
        ("transaction", transaction),
        ("everything", everything),
    )
