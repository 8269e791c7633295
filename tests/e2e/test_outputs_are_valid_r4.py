"""What the server itself produces must be valid R4: CapabilityStatement, history and
transaction/batch response Bundles, OperationOutcomes, subsetted resources."""

from __future__ import annotations

from typing import Any

import httpx

from fhirflow.validation import validate_resource


def _assert_valid(body: dict[str, Any]) -> None:
    issues = validate_resource(body)
    assert not issues, [(i.expression, i.diagnostics) for i in issues[:10]]


def test_server_outputs_validate(client: httpx.Client) -> None:
    patient = client.post("/Patient", json={"resourceType": "Patient", "active": True, "gender": "other"}).json()
    client.delete(f"/Patient/{patient['id']}")
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:7f9c1f3e-1111-4222-8333-944455556666",
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": {"resourceType": "Patient", "gender": "x"}, "request": {"method": "POST", "url": "Patient"}}
        ],
    }
    replies = [
        client.get("/metadata"),
        client.get("/_history"),
        client.get(f"/Patient/{patient['id']}/_history"),
        client.get("/Patient/does-not-exist"),
        client.post("/", json=transaction),
        client.post("/", json=batch),
        client.get(f"/Patient/{patient['id']}/_history/1", params={"_summary": "true"}),
        client.get(f"/Patient/{patient['id']}/_history/1", params={"_elements": "gender"}),
    ]
    for reply in replies:
        assert reply.status_code < 500
        _assert_valid(reply.json())
