"""The scenario (``scenario.py``) played with fhirclient (SMART on FHIR's Python client, R4 models).

fhirclient's models have create/read/update/delete and search with paging; the rest goes through its
``FHIRServer`` (``request_json``, ``put_json``, ``post_json``) or its Bundle model, as its users do.
It has no PATCH and its ``create()`` cannot send ``If-None-Exist``: those steps say so and reach the
same state with what the client offers.
"""

from __future__ import annotations

from typing import Any

import requests
from fhirclient.client import FHIRClient
from fhirclient.models.bundle import Bundle
from fhirclient.models.fhirdate import FHIRDate
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRServer

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

NO_PATCH = "fhirclient 4.x has no PATCH (FHIRServer sends GET/PUT/POST/DELETE only): the change is sent as an update"
NO_IF_NONE_EXIST = (
    "fhirclient's create() cannot send If-None-Exist: the conditional create is a batch entry's request.ifNoneExist"
)


def play(given: ScenarioInput) -> dict[str, Outcome]:
    settings = {"app_id": "fhirflow-tests", "api_base": given.base.rstrip("/") + "/"}
    server: FHIRServer = FHIRClient(settings=settings).server
    system = given.system
    state: dict[str, Any] = {}

    def capabilities() -> Outcome:
        server.get_capability()  # parses /metadata into the R4 CapabilityStatement model (strict)
        return capability_summary(server.capabilityStatement.as_json())

    def create() -> Outcome:
        patient = Patient({"identifier": [{"system": system, "value": "crud"}], "gender": "male"})
        created = patient.create(server)
        state["id"] = created["id"]
        return {"id": created["id"], "versionId": created["meta"]["versionId"]}

    def read() -> Outcome:
        patient = Patient.read(state["id"], server)
        state["patient"] = patient
        return {"id": patient.id, "versionId": patient.meta.versionId, "identifierSystem": patient.identifier[0].system}

    def update() -> Outcome:
        patient = state["patient"]
        patient.gender = "female"
        updated = patient.update()
        again = Patient.read(state["id"], server)
        return {"id": again.id, "versionId": updated["meta"]["versionId"], "gender": again.gender}

    def patch() -> Outcome:
        assert not any(hasattr(FHIRServer, name) for name in ("patch", "patch_json")), "fhirclient gained PATCH"
        patient = Patient.read(state["id"], server)
        patient.gender = "other"
        patient.birthDate = FHIRDate("1990-01-01")
        updated = patient.update()
        return (
            {"unsupported": NO_PATCH}
            | {k: updated.get(k) for k in ("id", "gender", "birthDate")}
            | {"versionId": updated["meta"]["versionId"]}
        )

    def history() -> Outcome:
        bundle = Bundle.read_from(f"Patient/{state['id']}/_history", server)
        return {"type": bundle.type, "versions": [entry.resource.meta.versionId for entry in bundle.entry]}

    def delete() -> Outcome:
        state["patient"].delete()
        try:
            Patient.read(state["id"], server)
        except requests.HTTPError as gone:
            return {"status": gone.response.status_code, "issueCode": gone.response.json()["issue"][0]["code"]}
        return {"error": "the deleted resource is still read"}

    def conditional_create() -> Outcome:
        criteria = f"identifier={system}|conditional-create"
        entry = {
            "resource": {"resourceType": "Patient", "identifier": [{"system": system, "value": "conditional-create"}]},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": criteria},
        }
        ids = []
        for _ in range(2):
            answer = Bundle({"resourceType": "Bundle", "type": "batch", "entry": [entry]}).create(server)
            ids.append(location_id(answer["entry"][0]["response"]["location"]))
        return {"unsupported": NO_IF_NONE_EXIST, "firstId": ids[0], "secondId": ids[1], "matches": _count(criteria)}

    def conditional_update() -> Outcome:
        # FHIRServer.put_json takes any path: PUT Patient?criteria is the conditional update.
        path = f"Patient?identifier={system}|conditional-update"
        body = {"resourceType": "Patient", "identifier": [{"system": system, "value": "conditional-update"}]}
        first = server.put_json(path, body | {"gender": "male"}).json()
        second = server.put_json(path, body | {"gender": "female"}).json()
        return {
            "firstId": first["id"],
            "firstVersion": first["meta"]["versionId"],
            "secondId": second["id"],
            "secondVersion": second["meta"]["versionId"],
            "gender": second["gender"],
            "matches": _count(f"identifier={system}|conditional-update"),
        }

    def conditional_create_ambiguous() -> Outcome:
        population = given.population.system
        entry = {
            "resource": {"resourceType": "Patient", "identifier": [{"system": population, "value": "ambiguous"}]},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={population}|"},
        }
        answer = Bundle({"resourceType": "Bundle", "type": "batch", "entry": [entry]}).create(server)
        response = answer["entry"][0]["response"]
        return {
            "status": int(response["status"].split()[0]),
            "issueCode": response["outcome"]["issue"][0]["code"],
        }

    def _count(criteria: str) -> int:
        total: int = Bundle.read_from(f"Patient?{criteria}&_summary=count", server).total
        return total

    def search_paging() -> Outcome:
        search = Patient.where({"identifier": f"{given.population.system}|", "_count": str(given.page_size)})
        pages = list(search.perform_iter(server))  # follows each Bundle's next link
        ids = [entry.resource.id for page in pages for entry in page.entry or []]
        return {"ids": ids, "pages": len(pages)}

    def include() -> Outcome:
        search = Observation.where({"subject": f"Patient/{given.population.probe_patient_id}"}).include("subject")
        bundle = next(search.perform_iter(server))
        return entries_by_mode(bundle.as_json())

    def batch() -> Outcome:
        return bundle_summary(Bundle(given.batch).create(server))

    def transaction() -> Outcome:
        answer = Bundle(given.transaction).create(server)
        patient_id, observation_id = (location_id(e["response"]["location"]) for e in answer["entry"])
        observation = Observation.read(observation_id, server)
        state["everything"] = patient_id
        return bundle_summary(answer) | {
            "patientId": patient_id,
            "observationId": observation_id,
            "observationSubject": observation.subject.reference,
        }

    def everything() -> Outcome:
        bundle = Bundle.read_from(f"Patient/{state['everything']}/$everything", server)
        return everything_summary(bundle.as_json())

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
