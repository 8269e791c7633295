"""fhirpy (PyPI), a real client, against the server: ``get_or_create`` (``POST [type]?criteria``)
finds the resource it created the first time instead of creating a duplicate, and its ``patch()``
(a partial resource sent as plain JSON, i.e. a merge patch) changes only what it names."""

from __future__ import annotations

import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.support import unique

fhirpy = pytest.importorskip("fhirpy")


@pytest.fixture
def fhir(server: LocalServer) -> fhirpy.SyncFHIRClient:
    return fhirpy.SyncFHIRClient(server.base_url)


def test_get_or_create_creates_once(fhir: fhirpy.SyncFHIRClient) -> None:
    value = unique("fhirpy")
    identifier = [{"system": "urn:fhirpy", "value": value}]
    search = fhir.resources("Patient").search(identifier=f"urn:fhirpy|{value}")

    first, created = search.get_or_create(fhir.resource("Patient", identifier=identifier, gender="male"))
    again, created_again = search.get_or_create(fhir.resource("Patient", identifier=identifier, gender="male"))

    assert created is True
    assert created_again is False
    assert again.id == first.id
    assert search.count() == 1


def test_patch_changes_only_the_named_fields(fhir: fhirpy.SyncFHIRClient) -> None:
    patient = fhir.resource("Patient", gender="male", birthDate="1970-01-01", name=[{"family": unique("Py")}])
    patient.save()

    patched = fhir.patch("Patient", patient.id, gender="female", birthDate=None)

    assert patched["gender"] == "female"
    assert "birthDate" not in patched
    assert patched["name"] == patient["name"]
    assert patched["meta"]["versionId"] == "2"
    assert fhir.reference("Patient", patient.id).to_resource()["gender"] == "female"


def test_everything_through_the_client(fhir: fhirpy.SyncFHIRClient) -> None:
    patient = fhir.resource("Patient", name=[{"family": unique("Everything")}])
    patient.save()
    observation = fhir.resource(
        "Observation", status="final", code={"text": "x"}, subject={"reference": f"Patient/{patient.id}"}
    )
    observation.save()

    bundle = fhir.reference("Patient", patient.id).execute("$everything", method="get")

    found = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    assert found == {("Patient", patient.id), ("Observation", observation.id)}
