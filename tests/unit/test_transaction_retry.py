"""A transaction that must run again (a conditional create lost its key to a concurrent writer)
starts from its entries as they came: references are rewritten in the entries themselves for
speed, and put back when an attempt fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fhirflow.ports import ClaimTaken
from fhirflow.runtime import Dependencies, build_dependencies
from fhirflow.settings import Settings
from fhirflow_bundle import references
from tests.unit.test_authz_kit import InProcessClient


@pytest.fixture
def deps(tmp_path: Path) -> Dependencies:
    return build_dependencies(Settings(data_dir=tmp_path, audit="off"))


def transaction() -> dict[str, Any]:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
        "hasMember": [{"reference": "Observation/elsewhere"}],
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
                "resource": {"resourceType": "Patient", "active": True},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": observation, "request": {"method": "POST", "url": "Observation"}},
        ],
    }


def _id(location: str) -> str:
    """The id in ``[base/]Type/id/_history/v``."""
    return location.split("/_history/", maxsplit=1)[0].rsplit("/", 1)[1]


def test_a_retried_transaction_rewrites_its_references_again(
    deps: Dependencies, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = deps.store.commit
    attempts: list[int] = []

    def lose_the_first_attempt(changes: Any) -> None:
        attempts.append(len(changes))
        if len(attempts) == 1:
            raise ClaimTaken(0, None)
        commit(changes)

    monkeypatch.setattr(deps.store, "commit", lose_the_first_attempt)
    api = InProcessClient(deps)
    reply = api.request("POST", "/", body=transaction())
    assert reply.status == 200, reply.body
    assert attempts == [2, 2]
    patient, observation = (_id(entry["response"]["location"]) for entry in reply.body["entry"])
    stored = api.get(f"/Observation/{observation}").body
    # The second attempt gave the patient a new id; the first attempt's must not have stuck.
    assert stored["subject"] == {"reference": f"Patient/{patient}"}
    assert api.get(f"/Patient/{patient}").status == 200


def test_restore_puts_back_every_rewritten_reference() -> None:
    bundle = transaction()
    entry = bundle["entry"][1]["resource"]
    undo: list[tuple[dict[str, Any], str]] = []
    mapping = {"urn:uuid:11111111-1111-4111-8111-111111111111": "Patient/new"}
    references.rewrite_in_place(entry, mapping, where="Bundle.entry[1]", undo=undo)
    assert entry["subject"] == {"reference": "Patient/new"}
    assert entry["hasMember"] == [{"reference": "Observation/elsewhere"}]  # not mapped: kept, no undo
    assert len(undo) == 1
    references.restore(undo)
    assert entry == transaction()["entry"][1]["resource"]
    assert undo == []


def test_an_unresolvable_local_reference_is_refused_and_nothing_is_left_rewritten(deps: Dependencies) -> None:
    bundle = transaction()
    bundle["entry"][1]["resource"]["focus"] = [{"reference": "urn:uuid:99999999-1111-4111-8111-111111111111"}]
    reply = InProcessClient(deps).request("POST", "/", body=bundle)
    assert reply.status == 400
    assert "Bundle.entry[1]" in str(reply.body)
