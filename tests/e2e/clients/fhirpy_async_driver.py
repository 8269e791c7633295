"""The scenario (``scenario.py``) played with fhirpy's asyncio client (``AsyncFHIRClient``, over aiohttp,
where ``SyncFHIRClient`` uses requests): the same API awaited, a different HTTP stack."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, ResourceNotFound

from tests.e2e.clients.scenario import (
    Outcome,
    ScenarioInput,
    bundle_summary,
    capability_summary,
    entries_by_mode,
    everything_summary,
    location_id,
    run_steps_async,
)


def play(given: ScenarioInput) -> dict[str, Outcome]:
    return asyncio.run(_play(given))


async def _play(given: ScenarioInput) -> dict[str, Outcome]:
    fhir = AsyncFHIRClient(given.base)
    system = given.system
    state: dict[str, Any] = {}

    async def capabilities() -> Outcome:
        statement = await fhir.execute("metadata", method="get")
        return capability_summary(statement)

    async def create() -> Outcome:
        patient = fhir.resource("Patient", identifier=[{"system": system, "value": "crud"}], gender="male")
        await patient.save()
        state["patient"] = patient
        return {"id": patient.id, "versionId": patient["meta"]["versionId"]}

    async def read() -> Outcome:
        found = await fhir.reference("Patient", state["patient"].id).to_resource()
        return {
            "id": found.id,
            "versionId": found["meta"]["versionId"],
            "identifierSystem": found["identifier"][0]["system"],
        }

    async def update() -> Outcome:
        patient = state["patient"]
        patient["gender"] = "female"
        await patient.save()
        again = await fhir.reference("Patient", patient.id).to_resource()
        return {"id": again.id, "versionId": patient["meta"]["versionId"], "gender": again["gender"]}

    async def patch() -> Outcome:
        # fhirpy's patch form: the changed fields as a partial resource (application/json, a merge patch).
        patched = await fhir.patch("Patient", state["patient"].id, gender="other", birthDate="1990-01-01")
        return {k: patched.get(k) for k in ("id", "gender", "birthDate")} | {"versionId": patched["meta"]["versionId"]}

    async def history() -> Outcome:
        bundle = await fhir.execute(f"Patient/{state['patient'].id}/_history", method="get")
        return {"type": bundle["type"], "versions": [e["resource"]["meta"]["versionId"] for e in bundle["entry"]]}

    async def delete() -> Outcome:
        await fhir.delete("Patient", state["patient"].id)
        try:
            await fhir.reference("Patient", state["patient"].id).to_resource()
        except ResourceNotFound as gone:  # fhirpy raises this for 404 and 410 alike, with the body
            return {"issueCode": json.loads(str(gone))["issue"][0]["code"]}
        return {"error": "the deleted resource is still read"}

    async def conditional_create() -> Outcome:
        # get_or_create is fhirpy's conditional create: POST Patient?identifier=... (the server reads the
        # query as If-None-Exist).
        search = fhir.resources("Patient").search(identifier=f"{system}|conditional-create")
        body = {"identifier": [{"system": system, "value": "conditional-create"}]}
        first, created = await search.get_or_create(fhir.resource("Patient", **body))
        second, created_again = await search.get_or_create(fhir.resource("Patient", **body))
        assert (created, created_again) == (True, False), (created, created_again)
        return {"firstId": first.id, "secondId": second.id, "matches": await search.count()}

    async def conditional_update() -> Outcome:
        search = fhir.resources("Patient").search(identifier=f"{system}|conditional-update")
        body = {"identifier": [{"system": system, "value": "conditional-update"}]}
        first, _ = await search.update(fhir.resource("Patient", **body, gender="male"))
        second, _ = await search.update(fhir.resource("Patient", **body, gender="female"))
        return {
            "firstId": first.id,
            "firstVersion": first["meta"]["versionId"],
            "secondId": second.id,
            "secondVersion": second["meta"]["versionId"],
            "gender": second["gender"],
            "matches": await search.count(),
        }

    async def conditional_create_ambiguous() -> Outcome:
        population = given.population.system
        search = fhir.resources("Patient").search(identifier=f"{population}|")
        try:
            await search.get_or_create(
                fhir.resource("Patient", identifier=[{"system": population, "value": "ambiguous"}])
            )
        except MultipleResourcesFound as several:  # fhirpy raises this for a 412, with the body
            return {"status": 412, "issueCode": json.loads(str(several))["issue"][0]["code"]}
        return {"error": "created although the criteria match the whole population"}

    async def search_paging() -> Outcome:
        # Iterating (async for) a search set follows the Bundle's next links to the end.
        search = fhir.resources("Patient").search(identifier=f"{given.population.system}|").limit(given.page_size)
        return {"ids": [patient.id async for patient in search]}

    async def include() -> Outcome:
        search = (
            fhir.resources("Observation")
            .search(subject=f"Patient/{given.population.probe_patient_id}")
            .include("Observation", "subject")
        )
        return entries_by_mode(await search.fetch_raw())

    async def batch() -> Outcome:
        return bundle_summary(await fhir.execute("", method="post", data=given.batch))

    async def transaction() -> Outcome:
        answer = await fhir.execute("", method="post", data=given.transaction)
        summary = bundle_summary(answer)
        patient_id, observation_id = (location_id(e["response"]["location"]) for e in answer["entry"])
        observation = await fhir.reference("Observation", observation_id).to_resource()
        state["everything"] = patient_id
        return summary | {
            "patientId": patient_id,
            "observationId": observation_id,
            "observationSubject": observation["subject"]["reference"],
        }

    async def everything() -> Outcome:
        bundle = await fhir.reference("Patient", state["everything"]).execute("$everything", method="get")
        return everything_summary(bundle)

    return await run_steps_async(
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
