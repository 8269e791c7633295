"""Every official R4 example is accepted by create and reads back equal apart from ``meta``;
mutated copies are refused with an OperationOutcome naming the offending element."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "fhir-r4" / "examples"
FILES = sorted(EXAMPLES.glob("*.json"))

# Examples the R4 specification itself publishes in a form that is not valid R4, each with the
# reason; the test below checks that they are refused (tests/unit/test_validation.py checks the issues).
KNOWN_INVALID: dict[str, str] = {
    "Questionnaire-qs1.json": "Questionnaire.item.linkId is 1..1 in R4, but 32 nested display items have none",
    # Subscriptions are live (docs/subscriptions.md): a Subscription the server cannot honour is refused.
    "Subscription-example.json": "Subscription.end (2021-01-01) is in the past",
    "Subscription-example-error.json": "Subscription.status 'error' is the server's to set, not a client's",
    **dict.fromkeys(
        (
            "ActivityDefinition-blood-tubes-supply.json",
            "ActivityDefinition-heart-valve-replacement.json",
            "EventDefinition-example.json",
            "Questionnaire-zika-virus-exposure-assessment.json",
        ),
        "txt-2: a narrative SHALL have some non-whitespace content; this one's div is only whitespace",
    ),
}


def _without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("meta", "id")}


@pytest.fixture(scope="module")
def examples() -> list[tuple[str, dict[str, Any]]]:
    if not FILES:
        pytest.skip(f"the HL7 examples are not at {EXAMPLES}")
    return [(f.name, json.loads(f.read_text())) for f in FILES]


def test_the_corpus_is_the_whole_r4_example_set(examples: list[tuple[str, dict[str, Any]]]) -> None:
    assert len(examples) >= 700


def test_every_example_is_created_and_read_back_equal(
    client: httpx.Client, examples: list[tuple[str, dict[str, Any]]]
) -> None:
    failures: list[str] = []
    for name, resource in examples:
        rtype = resource["resourceType"]
        created = client.post(f"/{rtype}", json=resource)
        if name in KNOWN_INVALID:
            assert created.status_code == 400, f"{name}: {KNOWN_INVALID[name]} — expected 400"
            continue
        if created.status_code != 201:
            failures.append(f"{name}: {created.status_code} {created.text[:300]}")
            continue
        new_id = created.json()["id"]
        read = client.get(f"/{rtype}/{new_id}", headers={"Accept": "application/fhir+json"})
        assert read.status_code == 200, name
        back = read.json()
        assert back["id"] == new_id
        assert back["meta"]["versionId"] == "1"
        assert _without_meta(back) == _without_meta(resource), name
        # The client's tags, security labels and profiles survive; the server owns versionId/lastUpdated.
        sent_meta = resource.get("meta", {})
        for key in ("tag", "security", "profile"):
            assert back["meta"].get(key) == sent_meta.get(key), f"{name}: meta.{key}"
    assert not failures, "\n".join(failures)


MUTATIONS: list[tuple[str, str, Any, str]] = [
    # (example file, dotted path to set (last key gets the value), value, expected expression)
    ("Patient-example.json", "gender", "robot", "Patient.gender"),
    ("Patient-example.json", "birthDate", "1974-13-25", "Patient.birthDate"),
    ("Patient-example.json", "active", "yes", "Patient.active"),
    ("Patient-example.json", "favouriteColour", "blue", "Patient.favouriteColour"),
    ("Patient-example.json", "name.0.given", "Peter", "Patient.name[0].given"),
    ("Observation-example.json", "status", None, "Observation.status"),
    ("Observation-example.json", "valueQuantity.value", "185", "Observation.valueQuantity.value"),
    ("Observation-example.json", "valueString", "also a string", "Observation.valueString"),
]


def _mutate(resource: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(resource))
    target: Any = copy
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is None:
        target.pop(keys[-1], None)
    else:
        target[keys[-1]] = value
    return copy


@pytest.mark.parametrize(("file", "path", "value", "expression"), MUTATIONS)
def test_mutated_examples_are_refused_with_the_element_named(
    client: httpx.Client, file: str, path: str, value: Any, expression: str
) -> None:
    original = json.loads((EXAMPLES / file).read_text())
    mutated = _mutate(original, path, value)
    before = client.get(f"/{original['resourceType']}/_history", params={"_count": 1}).json()
    reply = client.post(f"/{original['resourceType']}", json=mutated)
    assert reply.status_code == 400, reply.text
    outcome = reply.json()
    assert outcome["resourceType"] == "OperationOutcome"
    expressions = [e for issue in outcome["issue"] for e in issue.get("expression", [])]
    assert any(e == expression or e.startswith(expression) for e in expressions), expressions
    after = client.get(f"/{original['resourceType']}/_history", params={"_count": 1}).json()
    assert after.get("entry") == before.get("entry"), "a refused create must store nothing"
