"""Structural validation of FHIR R4 resources (fhirflow.validation).

Three layers: every official R4 example must pass; a table of single mutations of real examples must
each produce exactly the named issue; and arbitrary JSON must never make the validator raise.
The mutated examples are copies of official ones kept in ``validation_cases/`` so that this part does
not depend on the shared package being present.
"""

from __future__ import annotations

import copy
import gzip
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fhirflow.validation as validation
from fhirflow.errors import Issue
from fhirflow.validation import (
    is_resource_type,
    mandatory_elements,
    resource_types,
    summary_elements,
    validate_resource,
)
from fhirflow.validation.schema import schema
from fhirflow.validation.validator import MAX_DEPTH, MAX_ISSUES

REPO = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "validation_cases"
SHARED = REPO.parent / "shared" / "fhir-r4"
EXAMPLES = SHARED / "examples"
PACKAGE = SHARED / "hl7.fhir.r4.core"
DATA_FILE = REPO / "fhirflow" / "validation" / "data" / "r4.json.gz"

needs_shared = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"{SHARED} (HL7 R4 package and examples) not present")

Found = list[tuple[str, str]]


def found(issues: list[Issue]) -> Found:
    """(code, expression) of each issue; every issue must name exactly one location."""
    assert all(len(issue.expression) == 1 for issue in issues), issues
    return [(issue.code, issue.expression[0]) for issue in issues]


def load_case(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CASES / name).read_text(encoding="utf-8"))
    return data


# --- 1. The official examples --------------------------------------------------------------------------


def _qs1_missing_link_ids(doc: dict[str, Any]) -> Found:
    """The expected issues for Questionnaire-qs1: one per item without linkId, each a display item."""
    expected: Found = []

    def walk(items: list[dict[str, Any]], path: str) -> None:
        for index, item in enumerate(items):
            item_path = f"{path}.item[{index}]"
            if "linkId" not in item:
                assert item["type"] == "display"
                expected.append(("required", f"{item_path}.linkId"))
            walk(item.get("item", []), item_path)

    walk(doc["item"], "Questionnaire")
    return expected


EMPTY_NARRATIVES = (
    "ActivityDefinition-blood-tubes-supply.json",
    "ActivityDefinition-heart-valve-replacement.json",
    "EventDefinition-example.json",
    "Questionnaire-zika-virus-exposure-assessment.json",
)


def _empty_narrative(doc: dict[str, Any]) -> Found:
    return [("value", f"{doc['resourceType']}.text.div")]


# Official R4 examples that are not valid R4, with the reason and the exact issues they must produce
# (so this list cannot go stale: once an entry validates cleanly, its test fails).
KNOWN_INVALID: dict[str, tuple[str, Callable[[dict[str, Any]], Found]]] = {
    "Questionnaire-qs1.json": (
        "Questionnaire.item.linkId is 1..1 in R4, but the 32 'display' items nested in this example "
        "(Questionnaire.item[0].item[0], ...) have no linkId",
        _qs1_missing_link_ids,
    ),
    **dict.fromkeys(
        EMPTY_NARRATIVES,
        (
            "txt-2: a narrative SHALL have some non-whitespace content, but this one's div holds only whitespace",
            _empty_narrative,
        ),
    ),
}


def _example_files() -> list[str]:
    return sorted(path.name for path in EXAMPLES.glob("*.json")) if EXAMPLES.is_dir() else []


@needs_shared
def test_there_are_705_examples() -> None:
    assert len(_example_files()) == 705


@needs_shared
@pytest.mark.parametrize("name", _example_files())
def test_official_example_is_valid(name: str) -> None:
    doc = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    issues = validate_resource(doc, expected_type=doc["resourceType"])
    if name in KNOWN_INVALID:
        _reason, expected = KNOWN_INVALID[name]
        assert issues, f"{name} is listed in KNOWN_INVALID but now validates"
        assert found(issues) == expected(doc)
    else:
        assert issues == []


# --- 2. Mutations of real examples ----------------------------------------------------------------------

DROP = object()  # a change that removes the element


def apply(doc: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Apply changes given as {dotted path: new value or DROP}; numeric steps index arrays."""
    for dotted, value in changes.items():
        steps: list[Any] = [int(step) if step.isdigit() else step for step in dotted.split(".")]
        parent: Any = doc
        for step in steps[:-1]:
            parent = parent[step]
        if value is DROP:
            del parent[steps[-1]]
        else:
            parent[steps[-1]] = value
    return doc


class Case(NamedTuple):
    id: str
    example: str
    changes: dict[str, Any]
    expected: list[tuple[str, str]]  # (issue code, expression)
    expected_type: str | None = None


PAT = "Patient-example.json"
OBS = "Observation-example.json"
BUNDLE = "Bundle-bundle-example.json"
CAREPLAN = "CarePlan-example.json"
QUEST = "Questionnaire-3141.json"
COND = "Condition-example.json"
MEDREQ = "MedicationRequest-medrx0301.json"
EVIDENCE = "Evidence-example.json"

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
EXT = {"extension": [{"url": "http://example.org/why", "valueString": "unknown"}]}
NO_URL = {"extension": [{"valueString": "x"}]}
R4B_EVIDENCE_VARIABLE = [{"variableRole": {"text": "population"}, "observed": {"display": "x"}}]
R5_TRIGGER = [{"observation": {"reference": "Observation/x"}, "type": "reflex"}]

INVALID_CASES = [
    # Unknown elements, at every level; elements of later FHIR versions are unknown in R4.
    Case("unknown-top-level", PAT, {"foo": 1}, [("structure", "Patient.foo")]),
    Case("unknown-in-datatype", PAT, {"name.0.foo": "x"}, [("structure", "Patient.name[0].foo")]),
    Case("unknown-in-backbone", PAT, {"contact.0.foo": "x"}, [("structure", "Patient.contact[0].foo")]),
    Case(
        "unknown-in-content-reference",
        QUEST,
        {"item.0.item.0.foo": 1},
        [("structure", "Questionnaire.item[0].item[0].foo")],
    ),
    Case(
        "unknown-in-bundle-entry-link",
        BUNDLE,
        {"entry.0.link": [{"relation": "self", "url": "http://example.org/x", "foo": 1}]},
        [("structure", "Bundle.entry[0].link[0].foo")],
    ),
    Case(
        "unknown-in-primitive-extension",
        PAT,
        {"_birthDate.extension.0.foo": 1},
        [("structure", "Patient.birthDate.extension[0].foo")],
    ),
    Case("underscore-on-complex", PAT, {"_name": {"id": "a"}}, [("structure", "Patient.name")]),
    Case("value-in-primitive-extension", PAT, {"_birthDate.value": "x"}, [("structure", "Patient.birthDate.value")]),
    Case(
        "r4b-only-element",
        EVIDENCE,
        {"variableDefinition": R4B_EVIDENCE_VARIABLE},
        [("structure", "Evidence.variableDefinition")],
    ),
    Case("r5-only-element", OBS, {"triggeredBy": R5_TRIGGER}, [("structure", "Observation.triggeredBy")]),
    Case(
        "r5-codeable-reference",
        MEDREQ,
        {"medication": {"reference": {"reference": "Medication/x"}}},
        [("structure", "MedicationRequest.medication")],
    ),
    # Choice types (json.html#choice).
    Case("unknown-choice-variant", OBS, {"valueUri": "http://x"}, [("structure", "Observation.valueUri")]),
    Case("two-choice-variants", OBS, {"valueString": "heavy"}, [("structure", "Observation.valueString")]),
    Case("two-choice-variants-via-extension", OBS, {"_valueString": EXT}, [("structure", "Observation.valueString")]),
    # Wrong JSON type.
    Case("boolean-as-string", PAT, {"active": "true"}, [("structure", "Patient.active")]),
    Case("decimal-as-string", OBS, {"valueQuantity.value": "185"}, [("structure", "Observation.valueQuantity.value")]),
    Case("string-as-number", PAT, {"name.0.family": 42}, [("structure", "Patient.name[0].family")]),
    Case("object-as-string", PAT, {"maritalStatus": "M"}, [("structure", "Patient.maritalStatus")]),
    Case("integer-as-fraction", PAT, {"multipleBirthInteger": 2.5}, [("structure", "Patient.multipleBirthInteger")]),
    Case("boolean-choice-as-string", PAT, {"deceasedBoolean": "yes"}, [("structure", "Patient.deceasedBoolean")]),
    Case("null-property", PAT, {"gender": None}, [("structure", "Patient.gender")]),
    Case(
        "null-primitive-extension", PAT, {"birthDate": DROP, "_birthDate": None}, [("structure", "Patient.birthDate")]
    ),
    # Arrays where a single value is expected and vice versa (json.html#arrays).
    Case("array-for-single-primitive", PAT, {"gender": ["male"]}, [("structure", "Patient.gender")]),
    Case("array-for-single-complex", OBS, {"code": [{"text": "weight"}]}, [("structure", "Observation.code")]),
    Case("object-for-array", PAT, {"name": {"family": "Chalmers"}}, [("structure", "Patient.name")]),
    Case("string-for-array", PAT, {"name.0.given": "Peter"}, [("structure", "Patient.name[0].given")]),
    # Cardinality.
    Case("missing-required-top-level", OBS, {"status": DROP}, [("required", "Observation.status")]),
    Case("missing-required-bundle-type", BUNDLE, {"type": DROP}, [("required", "Bundle.type")]),
    Case("missing-required-in-backbone", PAT, {"link": [{"type": "seealso"}]}, [("required", "Patient.link[0].other")]),
    Case(
        "missing-required-nested-item",
        QUEST,
        {"item.0.item.0.linkId": DROP},
        [("required", "Questionnaire.item[0].item[0].linkId")],
    ),
    Case(
        "missing-required-choice", MEDREQ, {"medicationReference": DROP}, [("required", "MedicationRequest.medication")]
    ),
    Case("extension-without-url", PAT, {"extension": NO_URL["extension"]}, [("required", "Patient.extension[0].url")]),
    Case(
        "max-zero-in-simple-quantity",
        MEDREQ,
        {"dispenseRequest.quantity.comparator": "<"},
        [("invalid", "MedicationRequest.dispenseRequest.quantity.comparator")],
    ),
    # Primitive formats (datatypes.html#primitive).
    Case("bad-date", PAT, {"birthDate": "1999-13-01"}, [("value", "Patient.birthDate")]),
    Case("impossible-date", PAT, {"birthDate": "2023-02-30"}, [("value", "Patient.birthDate")]),
    Case("no-leap-day", PAT, {"birthDate": "2023-02-29"}, [("value", "Patient.birthDate")]),
    Case(
        "impossible-date-time",
        PAT,
        {"deceasedBoolean": DROP, "deceasedDateTime": "2016-04-31T10:00:00Z"},
        [("value", "Patient.deceasedDateTime")],
    ),
    Case(
        "date-time-without-zone",
        OBS,
        {"effectiveDateTime": "2016-03-28T09:30:00"},
        [("value", "Observation.effectiveDateTime")],
    ),
    Case("instant-without-time", OBS, {"issued": "2016-03-28"}, [("value", "Observation.issued")]),
    Case("uri-with-space", PAT, {"implicitRules": "http://exa mple.org"}, [("value", "Patient.implicitRules")]),
    Case("code-with-double-space", OBS, {"code.coding.0.code": "a  b"}, [("value", "Observation.code.coding[0].code")]),
    Case("id-with-bad-characters", PAT, {"id": "bad id!"}, [("value", "Patient.id")]),
    Case("id-too-long", PAT, {"id": "a" * 65}, [("value", "Patient.id")]),
    Case("integer-out-of-range", PAT, {"multipleBirthInteger": 2**31}, [("value", "Patient.multipleBirthInteger")]),
    Case("unsigned-int-negative", BUNDLE, {"total": -1}, [("value", "Bundle.total")]),
    Case(
        "positive-int-zero",
        MEDREQ,
        {"dosageInstruction.0.timing.repeat.frequency": 0},
        [("value", "MedicationRequest.dosageInstruction[0].timing.repeat.frequency")],
    ),
    Case("decimal-nan", OBS, {"valueQuantity.value": float("nan")}, [("value", "Observation.valueQuantity.value")]),
    Case(
        "bad-base64",
        PAT,
        {"photo": [{"contentType": "image/gif", "data": "abc"}]},
        [("value", "Patient.photo[0].data")],
    ),
    Case("div-not-xhtml-div", PAT, {"text.div": "<p>hello</p>"}, [("value", "Patient.text.div")]),
    # Required bindings (terminologies.html#required).
    Case("gender-robot", PAT, {"gender": "robot"}, [("value", "Patient.gender")]),
    Case("bound-code-in-array", PAT, {"telecom.1.system": "pager2"}, [("value", "Patient.telecom[1].system")]),
    Case(
        "bound-codeable-concept",
        COND,
        {"clinicalStatus.coding.0.code": "bogus"},
        [("value", "Condition.clinicalStatus.coding[0].code")],
    ),
    # Empty values (json.html: no empty objects, arrays or strings).
    Case("empty-object", PAT, {"maritalStatus": {}}, [("structure", "Patient.maritalStatus")]),
    Case("empty-object-in-array", PAT, {"name.0": {}}, [("structure", "Patient.name[0]")]),
    Case("empty-array", PAT, {"telecom": []}, [("structure", "Patient.telecom")]),
    Case("empty-string", PAT, {"name.0.family": ""}, [("value", "Patient.name[0].family")]),
    Case("empty-primitive-extension", PAT, {"_birthDate": {}}, [("structure", "Patient.birthDate")]),
    # Primitive extensions and their alignment with the values (json.html#primitive).
    Case("misaligned-extensions", PAT, {"name.0._given": [None]}, [("structure", "Patient.name[0].given")]),
    Case("null-without-extension", PAT, {"name.0.given": ["Peter", None]}, [("structure", "Patient.name[0].given[1]")]),
    Case(
        "null-in-both",
        PAT,
        {"name.0.given": [None, "James"], "name.0._given": [None, EXT]},
        [("structure", "Patient.name[0].given[0]")],
    ),
    Case("extensions-not-an-array", PAT, {"name.0._given": EXT}, [("structure", "Patient.name[0].given")]),
    Case("extension-object-as-array", PAT, {"_birthDate": [EXT]}, [("structure", "Patient.birthDate")]),
    Case(
        "bad-extension-in-repeating-primitive",
        PAT,
        {"name.0._given": [None, NO_URL]},
        [("required", "Patient.name[0].given[1].extension[0].url")],
    ),
    # Resource types, including nested resources.
    Case("type-differs-from-url", PAT, {}, [("invalid", "Patient")], expected_type="Observation"),
    Case("unknown-resource-type", PAT, {"resourceType": "Foo"}, [("invalid", "Resource")]),
    Case("abstract-resource-type", PAT, {"resourceType": "DomainResource"}, [("invalid", "Resource")]),
    Case("r5-only-resource-type", PAT, {"resourceType": "ActorDefinition"}, [("invalid", "Resource")]),
    Case("r4b-resource-type", PAT, {"resourceType": "SubscriptionTopic"}, [("invalid", "Resource")]),
    Case("missing-resource-type", PAT, {"resourceType": DROP}, [("required", "Resource")]),
    Case(
        "missing-resource-type-url-type",
        PAT,
        {"resourceType": DROP},
        [("required", "Patient")],
        expected_type="Patient",
    ),
    Case("resource-type-not-a-string", PAT, {"resourceType": 42}, [("structure", "Resource")]),
    Case(
        "bad-contained-resource",
        CAREPLAN,
        {"contained.0.clinicalStatus.coding.0.code": "bogus"},
        [("value", "CarePlan.contained[0].clinicalStatus.coding[0].code")],
    ),
    Case(
        "contained-without-type", CAREPLAN, {"contained.0.resourceType": DROP}, [("required", "CarePlan.contained[0]")]
    ),
    Case(
        "bad-bundle-entry-resource",
        BUNDLE,
        {"entry.1.resource.foo": 1},
        [("structure", "Bundle.entry[1].resource.foo")],
    ),
    Case(
        "bad-code-in-bundle-entry",
        BUNDLE,
        {"entry.0.resource.status": "bogus"},
        [("value", "Bundle.entry[0].resource.status")],
    ),
    Case(
        "unknown-type-in-bundle-entry",
        BUNDLE,
        {"entry.0.resource.resourceType": "ActorDefinition"},
        [("invalid", "Bundle.entry[0].resource")],
    ),
    Case(
        "bundle-entry-resource-as-array",
        BUNDLE,
        {"entry.0.resource": [{"resourceType": "Patient"}]},
        [("structure", "Bundle.entry[0].resource")],
    ),
]


@pytest.mark.parametrize("case", INVALID_CASES, ids=[case.id for case in INVALID_CASES])
def test_mutation_is_refused(case: Case) -> None:
    doc = load_case(case.example)
    assert validate_resource(doc, expected_type=doc["resourceType"]) == [], "the unmutated example must be valid"
    issues = validate_resource(apply(doc, case.changes), expected_type=case.expected_type)
    assert found(issues) == case.expected
    assert all(issue.diagnostics and issue.severity == "error" for issue in issues)


def test_mutation_corpus_is_large_enough() -> None:
    assert len(INVALID_CASES) >= 40
    assert len({case.id for case in INVALID_CASES}) == len(INVALID_CASES)


GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
DECEASED_TWICE = "Only one of the 'deceased[x]' variants is allowed; found 'deceasedBoolean' and 'deceasedDateTime'"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"foo": 1}, "Unknown element 'foo'"),
        ({"active": 1}, "Expected a JSON boolean (true or false) for a 'boolean' value"),
        ({"birthDate": 19991301}, "Expected a string for a 'date' value"),
        ({"birthDate": "1999-13-01"}, "'1999-13-01' is not a valid date"),
        ({"gender": "x"}, f"Value 'x' is not in the required value set {GENDER_VS}"),
        ({"link": [{"type": "seealso"}]}, "Element 'other' is required (min 1)"),
        ({"telecom": []}, "Empty arrays are not allowed"),
        ({"deceasedDateTime": "2015"}, DECEASED_TWICE),
    ],
)
def test_diagnostics_say_what_is_wrong(changes: dict[str, Any], message: str) -> None:
    issues = validate_resource(apply(load_case(PAT), changes))
    assert [issue.diagnostics for issue in issues] == [message]


def test_type_mismatch_message() -> None:
    issues = validate_resource(load_case(PAT), expected_type="Observation")
    assert issues == [
        Issue("invalid", "Resource type 'Patient' does not match the expected type 'Observation'", ("Patient",))
    ]


def test_parameters_resource_is_validated_as_its_own_type() -> None:
    doc = {
        "resourceType": "Parameters",
        "parameter": [{"name": "p", "resource": {"resourceType": "Patient", "gender": "robot"}}],
    }
    assert found(validate_resource(doc)) == [("value", "Parameters.parameter[0].resource.gender")]


@pytest.mark.parametrize("value", [[], [{"resourceType": "Patient"}], "Patient", 3, 2.5, True, None])
def test_non_object_input(value: object) -> None:
    assert found(validate_resource(value)) == [("structure", "Resource")]
    assert found(validate_resource(value, expected_type="Patient")) == [("structure", "Patient")]


def test_empty_object_input() -> None:
    assert found(validate_resource({})) == [("structure", "Resource")]


# Valid variations of Patient-example: things that look odd but are valid R4 must be accepted.
VALID_CHANGES = {
    "extension-without-value": {"birthDate": DROP},
    "aligned-nulls": {"name.0.given": ["Peter", None, "Jim"], "name.0._given": [None, EXT, EXT]},
    "extensions-only-repeating": {"name.1.given": DROP, "name.1._given": [EXT]},
    "extensions-beside-values": {"name.1._given": [EXT]},
    "leap-day": {"birthDate": "2024-02-29"},
    "partial-dates": {"name.2.period": {"start": "1990", "end": "2002-05"}},
    "leap-second-and-offset": {"deceasedBoolean": DROP, "deceasedDateTime": "2015-06-30T23:59:60+14:00"},
    "choice-with-its-extension": {"deceasedBoolean": DROP, "deceasedDateTime": "2020", "_deceasedDateTime": EXT},
    "unexpandable-binding": {"photo": [{"contentType": "application/x-made-up", "data": "AAAA AAAA\nAA=="}]},
    "extension-of-any-type": {
        "extension": [
            {"url": "http://x", "valueHumanName": {"family": "x"}},
            {"url": "http://y", "extension": [{"url": "z", "valueInteger": -5}]},
        ]
    },
    "element-id": {"name.0.id": "any string is fine here"},
    "other-system-in-coded-binding": {"maritalStatus": {"coding": [{"system": "http://example.org", "code": "x"}]}},
    "contained-resource": {"contained": [{"resourceType": "Organization", "id": "o1", "name": "x"}]},
}


@pytest.mark.parametrize("changes", VALID_CHANGES.values(), ids=VALID_CHANGES.keys())
def test_valid_variation_is_accepted(changes: dict[str, Any]) -> None:
    assert validate_resource(apply(load_case(PAT), changes)) == []


def test_codeable_concept_binding_ignores_codings_from_other_systems() -> None:
    doc = load_case(COND)
    doc["clinicalStatus"]["coding"].append({"system": "http://example.org/status", "code": "whatever"})
    assert validate_resource(doc) == []
    doc["clinicalStatus"]["coding"].append({"system": CLINICAL, "code": "remission"})
    assert validate_resource(doc) == []


def test_decimal_accepts_integers_and_exponents() -> None:
    doc = load_case(OBS)
    for value in (185, 0.000001, 1e300, -7):
        doc["valueQuantity"]["value"] = value
        assert validate_resource(doc) == []


# --- Depth and size safety ------------------------------------------------------------------------------


def _nested(levels: int, key: str, leaf: dict[str, Any], wrap: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    node = leaf
    for _ in range(levels):
        node = {key: wrap(node)} | {k: v for k, v in leaf.items() if k != key}
    return node


def test_deep_extension_nesting_is_an_issue_not_a_crash() -> None:
    ext = _nested(10_000, "extension", {"url": "http://x"}, lambda node: [node])
    issues = validate_resource({"resourceType": "Patient", "extension": ext["extension"]})
    assert len(issues) == 1
    assert issues[0].code == "structure"
    assert issues[0].expression == ("Patient" + ".extension[0]" * MAX_DEPTH,)


def test_deep_resource_nesting_is_an_issue_not_a_crash() -> None:
    leaf = {"resourceType": "Bundle", "type": "collection"}
    bundle = _nested(10_000, "entry", leaf, lambda node: [{"resource": node}])
    # Each Bundle level is two objects deep: the entry and its resource.
    assert found(validate_resource(bundle)) == [("structure", "Bundle" + ".entry[0].resource" * (MAX_DEPTH // 2))]


def test_deep_lists_are_an_issue_not_a_crash() -> None:
    value: list[Any] = []
    for _ in range(10_000):
        value = [value]
    assert found(validate_resource(value)) == [("structure", "Resource")]
    assert found(validate_resource({"resourceType": "Patient", "name": value})) == [("structure", "Patient.name[0]")]


def test_questionnaire_items_nested_fifty_deep_are_valid() -> None:
    item = _nested(50, "item", {"linkId": "x", "type": "group"}, lambda node: [node])
    doc = {"resourceType": "Questionnaire", "status": "draft", "item": [{"linkId": "root", "type": "group", **item}]}
    assert validate_resource(doc) == []


def _stack_depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1  # type: ignore[assignment]
    return depth


def test_no_recursion_error_when_called_with_little_stack_left() -> None:
    ext = _nested(MAX_DEPTH - 5, "extension", {"url": "http://x"}, lambda node: [node])
    resource = {"resourceType": "Patient", "extension": ext["extension"]}
    assert validate_resource(resource) == []

    def deep(frames: int) -> list[Issue]:
        return deep(frames - 1) if frames else validate_resource(resource)

    issues = deep(sys.getrecursionlimit() - _stack_depth() - 60)
    assert [issue.diagnostics for issue in issues] == ["The resource is nested too deeply to be validated"]


def test_issue_count_is_bounded() -> None:
    doc: dict[str, Any] = {"resourceType": "Patient"} | {f"x{i}": i for i in range(MAX_ISSUES + 500)}
    issues = validate_resource(doc)
    assert len(issues) == MAX_ISSUES + 1
    assert issues[-1].code == "too-costly"
    assert issues[-1].severity == "warning"


def test_non_string_keys_are_refused() -> None:
    assert found(validate_resource({"resourceType": "Patient", 1: "x"})) == [("structure", "Patient")]


# --- 3. Never raises ------------------------------------------------------------------------------------

FUZZ_TYPES = [
    "Patient",
    "Observation",
    "Bundle",
    "Bundle.entry",
    "Questionnaire.item",
    "Extension",
    "HumanName",
    "Coding",
]


def _element_names() -> list[str]:
    """Real JSON names (and "_name" forms) of a few types, so fuzzed objects reach deep into the model."""
    names = {"resourceType"}
    for type_name in FUZZ_TYPES:
        for name, spec in schema().typedef(type_name).elements.items():
            names.update((name, spec.ext_key))
    return sorted(names)


ELEMENT_NAMES = _element_names()
RESOURCE_NAMES = ["Patient", "Observation", "Bundle", "Questionnaire", "Parameters", "Extension", "Resource", "Foo"]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_keys = st.sampled_from(ELEMENT_NAMES) | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=5),
    max_leaves=16,
)
resource_like = st.builds(
    lambda rt, body: {"resourceType": rt, **body},
    st.sampled_from(RESOURCE_NAMES),
    st.dictionaries(json_keys, json_values, max_size=4),
)
FUZZ = settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_issues(result: object) -> None:
    assert isinstance(result, list)
    assert all(isinstance(issue, Issue) for issue in result)


@FUZZ
@given(json_values, st.sampled_from([None, "Patient", "Foo"]))
def test_random_json_never_raises(value: object, expected_type: str | None) -> None:
    _assert_issues(validate_resource(value, expected_type=expected_type))


@FUZZ
@given(resource_like)
def test_random_resources_never_raise(value: object) -> None:
    _assert_issues(validate_resource(value))


FUZZ_BASES = [load_case(name) for name in (PAT, OBS, BUNDLE, CAREPLAN, QUEST, MEDREQ)]


def _positions(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key and index path inside a document."""
    found_paths: list[tuple[str | int, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        found_paths.append((*path, key))
        found_paths.extend(_positions(child, (*path, key)))
    return found_paths


FUZZ_POSITIONS = [_positions(doc) for doc in FUZZ_BASES]


@FUZZ
@given(st.data())
def test_random_json_spliced_into_examples_never_raises(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(FUZZ_BASES) - 1))
    doc = copy.deepcopy(FUZZ_BASES[index])
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(FUZZ_POSITIONS[index]))
        try:
            parent: Any = doc
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = data.draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier splice removed this position
    _assert_issues(validate_resource(doc))


# --- Public interface -----------------------------------------------------------------------------------


def test_resource_types() -> None:
    types = resource_types()
    assert len(types) == 146
    assert types == validation.RESOURCE_TYPES
    assert {"Patient", "Observation", "Bundle", "Parameters", "Binary", "MedicinalProduct"} <= types
    assert not {"Resource", "DomainResource", "Element", "HumanName", "SubscriptionTopic", "ActorDefinition"} & types
    assert is_resource_type("Patient")
    assert not is_resource_type("Resource")
    assert not is_resource_type("DomainResource")
    assert not is_resource_type("patient")


def test_summary_elements() -> None:
    patient = summary_elements("Patient")
    assert {"id", "meta", "identifier", "name", "gender", "birthDate", "deceasedBoolean", "deceasedDateTime"} <= patient
    assert not {"text", "contact", "photo", "deceased", "multipleBirthBoolean", "resourceType"} & patient
    observation = summary_elements("Observation")
    assert {"status", "code", "subject", "valueQuantity", "valueString", "effectiveDateTime"} <= observation
    assert "note" not in observation
    assert summary_elements("Foo") == frozenset()


def test_mandatory_elements() -> None:
    assert mandatory_elements("Observation") == {"status", "code"}
    assert mandatory_elements("Patient") == frozenset()
    assert mandatory_elements("Bundle") == {"type"}
    assert mandatory_elements("Foo") == frozenset()


def test_import_does_not_load_the_model() -> None:
    code = "import sys, fhirflow.validation; sys.exit('fhirflow.validation.schema' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO).returncode == 0


@pytest.mark.skipif(not PACKAGE.is_dir(), reason=f"{PACKAGE} not present")
def test_data_file_matches_the_generator() -> None:
    spec = importlib.util.spec_from_file_location("gen_r4_schema", REPO / "tools" / "gen_r4_schema.py")
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    with gzip.open(DATA_FILE, "rb") as handle:
        committed = json.loads(handle.read())
    assert generator.build(PACKAGE) == committed
    assert DATA_FILE.stat().st_size < 2 * 1024 * 1024
