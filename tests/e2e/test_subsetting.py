"""``_summary`` and ``_elements`` on read (http://hl7.org/fhir/R4/search.html#summary, #elements).

A subset is marked with the SUBSETTED tag; ``_summary=false`` (and ``count`` on a read) return the
whole resource.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.support import assert_outcome, create, read, subsetted

NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Summary E2e</div>'}


def _full_patient(client: httpx.Client) -> dict[str, Any]:
    return create(
        client,
        {
            "resourceType": "Patient",
            "meta": {"tag": [{"system": "http://example.org/tags", "code": "keep"}]},
            "text": NARRATIVE,
            "identifier": [{"system": "http://example.org/mrn", "value": "12345"}],
            "active": True,
            "name": [{"family": "Summary", "given": ["E2e"]}],
            "gender": "female",
            "birthDate": "1970-01-01",
            "maritalStatus": {"text": "married"},
            "communication": [{"language": {"text": "English"}}],
            "contact": [{"name": {"family": "Contact"}}],
        },
    )


def _data_keys(resource: dict[str, Any]) -> set[str]:
    return set(resource) - {"resourceType", "id", "meta"}


def test_summary_true_keeps_only_summary_elements(client: httpx.Client) -> None:
    full = _full_patient(client)

    reply = read(client, "Patient", full["id"], params={"_summary": "true"})

    assert reply.status_code == 200
    body = reply.json()
    # Patient's isSummary elements in R4; text, maritalStatus, communication and contact are not.
    assert _data_keys(body) == {"identifier", "active", "name", "gender", "birthDate"}
    assert body["id"] == full["id"]
    assert body["meta"]["versionId"] == full["meta"]["versionId"]
    assert subsetted(body)
    assert {"system": "http://example.org/tags", "code": "keep"} in body["meta"]["tag"]


def test_summary_text_keeps_text_and_mandatory_elements(client: httpx.Client) -> None:
    full = _full_patient(client)

    reply = read(client, "Patient", full["id"], params={"_summary": "text"})

    assert reply.status_code == 200
    body = reply.json()
    assert _data_keys(body) == {"text"}  # Patient has no mandatory top-level elements
    assert body["text"] == NARRATIVE
    assert subsetted(body)


def test_summary_text_keeps_mandatory_elements_of_an_observation(client: httpx.Client) -> None:
    observation = create(
        client,
        {
            "resourceType": "Observation",
            "text": NARRATIVE,
            "status": "final",
            "code": {"text": "weight"},
            "valueQuantity": {"value": 70, "unit": "kg"},
            "note": [{"text": "after lunch"}],
        },
    )

    body = read(client, "Observation", observation["id"], params={"_summary": "text"}).json()

    assert _data_keys(body) == {"text", "status", "code"}
    assert subsetted(body)


def test_summary_data_removes_only_the_text(client: httpx.Client) -> None:
    full = _full_patient(client)

    reply = read(client, "Patient", full["id"], params={"_summary": "data"})

    assert reply.status_code == 200
    body = reply.json()
    assert _data_keys(body) == _data_keys(full) - {"text"}
    assert {k: v for k, v in body.items() if k != "meta"} == {
        k: v for k, v in full.items() if k not in ("meta", "text")
    }
    assert subsetted(body)


@pytest.mark.parametrize("mode", ["false", "count"])
def test_summary_false_returns_the_whole_resource(client: httpx.Client, mode: str) -> None:
    full = _full_patient(client)

    reply = read(client, "Patient", full["id"], params={"_summary": mode})

    assert reply.status_code == 200
    assert reply.json() == full
    assert not subsetted(reply.json())


def test_elements_keeps_the_named_elements(client: httpx.Client) -> None:
    full = _full_patient(client)

    reply = read(client, "Patient", full["id"], params={"_elements": "gender,birthDate"})

    assert reply.status_code == 200
    body = reply.json()
    assert _data_keys(body) == {"gender", "birthDate"}
    assert body["gender"] == full["gender"]
    assert body["birthDate"] == full["birthDate"]
    assert body["id"] == full["id"]
    assert subsetted(body)


def test_elements_names_a_choice_element_by_its_base_name(client: httpx.Client) -> None:
    observation = create(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "weight"},
            "valueQuantity": {"value": 70, "unit": "kg"},
            "note": [{"text": "after lunch"}],
        },
    )

    body = read(client, "Observation", observation["id"], params={"_elements": "value"}).json()

    # Mandatory elements come back whether asked for or not (search.html#elements, SHOULD).
    assert _data_keys(body) == {"valueQuantity", "status", "code"}
    assert subsetted(body)


def test_subsetting_applies_to_vread(client: httpx.Client) -> None:
    full = _full_patient(client)

    body = client.get(f"/Patient/{full['id']}/_history/1", params={"_elements": "gender"}).json()

    assert _data_keys(body) == {"gender"}
    assert subsetted(body)


def test_subsetting_does_not_change_what_is_stored(client: httpx.Client) -> None:
    full = _full_patient(client)
    read(client, "Patient", full["id"], params={"_summary": "true"})

    assert read(client, "Patient", full["id"]).json() == full


@pytest.mark.parametrize("mode", ["bogus", "TRUE", ""])
def test_invalid_summary_is_400(client: httpx.Client, mode: str) -> None:
    full = _full_patient(client)

    assert_outcome(read(client, "Patient", full["id"], params={"_summary": mode}), 400, expression="_summary")
