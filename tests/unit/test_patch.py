"""fhirflow.patch: JSON Patch (RFC 6902) and FHIRPath Patch (FHIR R4 fhirpatch.html).

The RFC 6902 Appendix A examples and the HL7 fhir-test-cases FHIRPath Patch cases
(r5/patch/fhir-path-tests.xml, transcribed to JSON) are written out as tables; the
property tests check that no input makes either function raise anything but a FhirError
or modify its arguments.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhirflow.errors import BadRequest, FhirError, UnprocessableEntity
from fhirflow.patch import apply_fhirpath_patch, apply_json_patch
from fhirflow.validation import element_repeats as default_repeats

# --------------------------------------------------------------------------- JSON Patch

RFC6902_APPENDIX_A = [
    pytest.param(
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux"}],
        {"baz": "qux", "foo": "bar"},
        id="A.1 adding an object member",
    ),
    pytest.param(
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
        id="A.2 adding an array element",
    ),
    pytest.param(
        {"baz": "qux", "foo": "bar"},
        [{"op": "remove", "path": "/baz"}],
        {"foo": "bar"},
        id="A.3 removing an object member",
    ),
    pytest.param(
        {"foo": ["bar", "qux", "baz"]},
        [{"op": "remove", "path": "/foo/1"}],
        {"foo": ["bar", "baz"]},
        id="A.4 removing an array element",
    ),
    pytest.param(
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
        id="A.5 replacing a value",
    ),
    pytest.param(
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
        id="A.6 moving a value",
    ),
    pytest.param(
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
        id="A.7 moving an array element",
    ),
    pytest.param(
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
        {"baz": "qux", "foo": ["a", 2, "c"]},
        id="A.8 testing a value: success",
    ),
    pytest.param(
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
        id="A.10 adding a nested member object",
    ),
    pytest.param(
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
        {"foo": "bar", "baz": "qux"},
        id="A.11 ignoring unrecognized elements",
    ),
    pytest.param(
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": 10}],
        {"/": 9, "~1": 10},
        id="A.14 ~ escape ordering",
    ),
    pytest.param(
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
        id="A.16 adding an array value",
    ),
]

RFC6902_APPENDIX_A_ERRORS = [
    pytest.param({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], id="A.9 testing a value: error"),
    pytest.param({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}], id="A.12 nonexistent target"),
    pytest.param({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}], id="A.15 string vs number"),
]


@pytest.mark.parametrize(("document", "patch", "expected"), RFC6902_APPENDIX_A)
def test_rfc6902_appendix_a_examples(document: dict[str, Any], patch: list[Any], expected: dict[str, Any]) -> None:
    assert apply_json_patch(document, patch) == expected


@pytest.mark.parametrize(("document", "patch"), RFC6902_APPENDIX_A_ERRORS)
def test_rfc6902_appendix_a_error_examples_are_unprocessable(document: dict[str, Any], patch: list[Any]) -> None:
    with pytest.raises(UnprocessableEntity, match=r"operations\[0\]"):
        apply_json_patch(document, patch)


def test_rfc6902_a13_duplicate_op_member_is_rejected() -> None:
    # A.13: {"op": "add", ..., "op": "remove"} is not a valid patch. Which member survives is
    # up to the JSON parser (Python keeps the last: a remove of a missing /baz); duplicate
    # detection belongs to the body parser, the patch itself must still fail.
    patch = json.loads('[{"op": "add", "path": "/baz", "value": "qux", "op": "remove"}]')
    with pytest.raises(FhirError):
        apply_json_patch({"foo": "bar"}, patch)


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "example",
    "active": True,
    "birthDate": "1974-12-25",
    "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}],
    "telecom": [
        {"system": "phone", "value": "(03) 5555 6473", "use": "work"},
        {"system": "email", "value": "p@example.org"},
    ],
    "multipleBirthInteger": 1,
}

JSON_PATCH_CASES = [
    pytest.param(
        [{"op": "replace", "path": "/birthDate", "value": "1975-01-01"}],
        {**PATIENT, "birthDate": "1975-01-01"},
        id="replace birthDate",
    ),
    pytest.param(
        [{"op": "add", "path": "/name/-", "value": {"use": "nickname", "given": ["Jim"]}}],
        {**PATIENT, "name": [*PATIENT["name"], {"use": "nickname", "given": ["Jim"]}]},
        id="add a name at the end",
    ),
    pytest.param(
        [{"op": "add", "path": "/name/0", "value": {"text": "first"}}],
        {**PATIENT, "name": [{"text": "first"}, *PATIENT["name"]]},
        id="add a name at the front",
    ),
    pytest.param(
        [{"op": "remove", "path": "/telecom/1"}],
        {**PATIENT, "telecom": PATIENT["telecom"][:1]},
        id="remove telecom[1]",
    ),
    pytest.param(
        [
            {"op": "test", "path": "/name/0/family", "value": "Chalmers"},
            {"op": "replace", "path": "/name/0/family", "value": "Chalmers-Smith"},
        ],
        {**PATIENT, "name": [{**PATIENT["name"][0], "family": "Chalmers-Smith"}]},
        id="test then replace",
    ),
    pytest.param(
        [{"op": "copy", "from": "/telecom/0", "path": "/telecom/-"}],
        {**PATIENT, "telecom": [*PATIENT["telecom"], PATIENT["telecom"][0]]},
        id="copy a telecom",
    ),
    pytest.param(
        [{"op": "move", "from": "/telecom/1", "path": "/telecom/0"}],
        {**PATIENT, "telecom": PATIENT["telecom"][::-1]},
        id="move telecom[1] to the front",
    ),
    pytest.param(
        [{"op": "test", "path": "/multipleBirthInteger", "value": 1.0}],
        PATIENT,
        id="test: 1 equals 1.0",
    ),
    pytest.param(
        [
            {
                "op": "test",
                "path": "/name/0",
                "value": {"given": ["Peter", "James"], "family": "Chalmers", "use": "official"},
            }
        ],
        PATIENT,
        id="test: objects compare without key order",
    ),
    pytest.param([], PATIENT, id="an empty patch changes nothing"),
]


@pytest.mark.parametrize(("operations", "expected"), JSON_PATCH_CASES)
def test_json_patch_on_a_patient(operations: list[Any], expected: dict[str, Any]) -> None:
    assert apply_json_patch(PATIENT, operations) == expected


JSON_PATCH_UNPROCESSABLE = [
    pytest.param([{"op": "test", "path": "/birthDate", "value": "2000-01-01"}], "test failed", id="test fails"),
    pytest.param([{"op": "test", "path": "/active", "value": 1}], "test failed", id="test: true is not 1"),
    pytest.param(
        [{"op": "test", "path": "/multipleBirthInteger", "value": "1"}], "test failed", id="test: '1' is not 1"
    ),
    pytest.param([{"op": "remove", "path": "/telecom/5"}], "out of range", id="remove index out of range"),
    pytest.param([{"op": "add", "path": "/telecom/3", "value": {}}], "past the end", id="add index past the end"),
    pytest.param([{"op": "replace", "path": "/telecom/-", "value": {}}], "'-'", id="replace at '-'"),
    pytest.param([{"op": "add", "path": "/telecom/01", "value": {}}], "not an array index", id="leading zero index"),
    pytest.param(
        [{"op": "replace", "path": "/gender", "value": "male"}], "does not exist", id="replace missing member"
    ),
    pytest.param([{"op": "remove", "path": "/address"}], "does not exist", id="remove missing member"),
    pytest.param([{"op": "copy", "from": "/photo", "path": "/x"}], "does not exist", id="copy from missing"),
    pytest.param(
        [{"op": "add", "path": "/birthDate/x", "value": 1}], "not an object or array", id="add under primitive"
    ),
    pytest.param([{"op": "remove", "path": ""}], "whole document", id="remove the root"),
    pytest.param([{"op": "replace", "path": "", "value": [1]}], "not a JSON object", id="root becomes an array"),
]


@pytest.mark.parametrize(("operations", "message"), JSON_PATCH_UNPROCESSABLE)
def test_json_patch_that_cannot_apply_is_422(operations: list[Any], message: str) -> None:
    with pytest.raises(UnprocessableEntity, match=message) as caught:
        apply_json_patch(PATIENT, operations)
    assert caught.value.status == 422


def test_json_patch_failure_names_the_failing_operation() -> None:
    operations = [
        {"op": "replace", "path": "/active", "value": False},
        {"op": "test", "path": "/id", "value": "example"},
        {"op": "remove", "path": "/name/3"},
    ]
    with pytest.raises(UnprocessableEntity, match=r"^operations\[2\]: remove failed"):
        apply_json_patch(PATIENT, operations)


JSON_PATCH_MALFORMED = [
    pytest.param({"op": "add", "path": "/a", "value": 1}, "JSON array", id="an object, not a list"),
    pytest.param("[]", "JSON array", id="a string"),
    pytest.param(None, "JSON array", id="null"),
    pytest.param([["add", "/a", 1]], r"operations\[0\]: an operation must be a JSON object", id="op not an object"),
    pytest.param([{"path": "/a", "value": 1}], r"operations\[0\]: 'op' is required", id="missing op"),
    pytest.param([{"op": "merge", "path": "/a"}], r"operations\[0\]: unknown op 'merge'", id="unknown op"),
    pytest.param([{"op": 7, "path": "/a"}], r"unknown op a JSON int", id="op not a string"),
    pytest.param([{"op": "remove"}], r"operations\[0\]: 'path' is required", id="missing path"),
    pytest.param([{"op": "add", "path": "/a"}], r"operations\[0\]: 'value' is required", id="add without value"),
    pytest.param([{"op": "test", "path": "/a"}], "'value' is required", id="test without value"),
    pytest.param([{"op": "move", "path": "/a"}], "'from' is required", id="move without from"),
    pytest.param([{"op": "copy", "path": "/a", "from": 3}], "'from' must be a string", id="from not a string"),
    pytest.param([{"op": "remove", "path": "name"}], "start with '/'", id="pointer without leading slash"),
    pytest.param([{"op": "remove", "path": "/a~2b"}], "'~'", id="bad ~ escape"),
    pytest.param([{"op": "remove", "path": "/a~"}], "'~'", id="trailing ~"),
    pytest.param([{"op": "remove", "path": ["a"]}], "'path' must be a string", id="path not a string"),
    pytest.param([{"op": "move", "from": "/name", "path": "/name/0"}], "proper prefix", id="move into own child"),
]


@pytest.mark.parametrize(("operations", "message"), JSON_PATCH_MALFORMED)
def test_malformed_json_patch_is_400(operations: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        apply_json_patch(PATIENT, operations)
    assert caught.value.status == 400


def test_malformed_operation_wins_over_an_earlier_inapplicable_one() -> None:
    # The whole document is checked before anything runs, so the answer does not depend on data.
    operations = [{"op": "remove", "path": "/nope"}, {"op": "add", "path": "/a"}]
    with pytest.raises(BadRequest, match=r"operations\[1\]"):
        apply_json_patch(PATIENT, operations)


def test_json_patch_returns_a_new_object_sharing_nothing_with_its_inputs() -> None:
    resource = copy.deepcopy(PATIENT)
    value = {"use": "nickname", "given": ["Jim"]}
    operations = [{"op": "add", "path": "/name/-", "value": value}, {"op": "remove", "path": "/telecom/0"}]
    result = apply_json_patch(resource, operations)
    assert resource == PATIENT
    result["name"][-1]["given"].append("Jimmy")
    result["name"][0]["given"].append("X")
    assert value == {"use": "nickname", "given": ["Jim"]}
    assert resource == PATIENT


# ----------------------------------------------------------------------- FHIRPath Patch


def operation(op_type: str, path: str, **parts: Any) -> dict[str, Any]:
    """One Parameters.parameter for a FHIRPath Patch operation.

    ``value`` is the content of the value part (e.g. ``{"valueDate": "1930-01-01"}`` or
    ``{"part": [...]}``); ``name`` is a string; ``index``/``source``/``destination`` ints.
    """
    built = [{"name": "type", "valueCode": op_type}, {"name": "path", "valueString": path}]
    for name, content in parts.items():
        if name == "value":
            built.append({"name": "value", **content})
        elif name == "name":
            built.append({"name": "name", "valueString": content})
        else:
            built.append({"name": name, "valueInteger": content})
    return {"name": "operation", "part": built}


def parameters(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(operations)}


def identifiers(*values: int) -> list[dict[str, str]]:
    return [{"system": "http://example.org", "value": f"value {value}"} for value in values]


CONTACT = {"name": {"text": "a name"}, "gender": "male"}

# The HL7 fhir-test-cases FHIRPath Patch cases (r5/patch/fhir-path-tests.xml) in JSON.
HL7_TEST_CASES = [
    pytest.param({"birthDate": "1920-01-01"}, [], {"birthDate": "1920-01-01"}, id="no difference"),
    pytest.param(
        {"birthDate": "1920-01-01"},
        [operation("replace", "Patient.birthDate", value={"valueDate": "1930-01-01"})],
        {"birthDate": "1930-01-01"},
        id="replace primitive",
    ),
    pytest.param(
        {"birthDate": "1920-01-01"},
        [operation("delete", "Patient.birthDate")],
        {},
        id="delete primitive",
    ),
    pytest.param(
        {},
        [operation("add", "Patient", name="birthDate", value={"valueDate": "1930-01-01"})],
        {"birthDate": "1930-01-01"},
        id="add primitive",
    ),
    pytest.param(
        {"contact": [CONTACT]},
        [operation("replace", "Patient.contact[0].gender", value={"valueCode": "female"})],
        {"contact": [{**CONTACT, "gender": "female"}]},
        id="replace nested primitive #1",
    ),
    pytest.param(
        {"contact": [CONTACT]},
        [operation("replace", "Patient.contact[0].name.text", value={"valueString": "the name"})],
        {"contact": [{**CONTACT, "name": {"text": "the name"}}]},
        id="replace nested primitive #2",
    ),
    pytest.param(
        {"contact": [CONTACT]},
        [operation("delete", "Patient.contact[0].gender")],
        {"contact": [{"name": {"text": "a name"}}]},
        id="delete nested primitive #1",
    ),
    pytest.param(
        {"contact": [CONTACT]},
        [operation("delete", "Patient.contact[0].name.text")],
        {"contact": [{"gender": "male"}]},
        id="delete nested primitive #2 (emptied parent removed)",
    ),
    pytest.param(
        {"contact": [{"name": {"text": "a name"}}]},
        [operation("add", "Patient.contact[0]", name="gender", value={"valueCode": "male"})],
        {"contact": [CONTACT]},
        id="add nested primitive",
    ),
    pytest.param(
        {},
        [operation("add", "Patient", name="maritalStatus", value={"valueCodeableConcept": {"text": "married"}})],
        {"maritalStatus": {"text": "married"}},
        id="add complex",
    ),
    pytest.param(
        {"maritalStatus": {"id": "1", "text": "married"}},
        [
            operation(
                "replace", "Patient.maritalStatus", value={"valueCodeableConcept": {"id": "2", "text": "not married"}}
            )
        ],
        {"maritalStatus": {"id": "2", "text": "not married"}},
        id="replace complex",
    ),
    pytest.param(
        {"maritalStatus": {"text": "married"}},
        [operation("delete", "Patient.maritalStatus")],
        {},
        id="delete complex",
    ),
    pytest.param(
        {},
        [
            operation(
                "add",
                "Patient",
                name="contact",
                value={"part": [{"name": "name", "valueHumanName": {"text": "a name"}}]},
            )
        ],
        {"contact": [{"name": {"text": "a name"}}]},
        id="add anonymous type (value from parts)",
    ),
    pytest.param(
        {"contact": [{"name": {"text": "a name"}}]},
        [operation("delete", "Patient.contact[0]")],
        {},
        id="delete anonymous type",
    ),
    pytest.param(
        {"identifier": [{"id": "a", **identifiers(1)[0]}, {"id": "b", **identifiers(2)[0]}]},
        [
            operation("replace", "Patient.identifier[0].value", value={"valueString": "value 2"}),
            operation("replace", "Patient.identifier[1].value", value={"valueString": "value 1"}),
        ],
        {"identifier": [{"id": "a", **identifiers(2)[0]}, {"id": "b", **identifiers(1)[0]}]},
        id="list unchanged, contents changed",
    ),
    pytest.param(
        {"identifier": identifiers(1, 2)},
        [operation("insert", "Patient.identifier", index=2, value={"valueIdentifier": identifiers(3)[0]})],
        {"identifier": identifiers(1, 2, 3)},
        id="add to list (insert at the end)",
    ),
    pytest.param(
        {"identifier": identifiers(1, 2)},
        [operation("insert", "Patient.identifier", index=1, value={"valueIdentifier": identifiers(3)[0]})],
        {"identifier": identifiers(1, 3, 2)},
        id="insert in list #1",
    ),
    pytest.param(
        {"identifier": identifiers(1, 2)},
        [operation("insert", "Patient.identifier", index=0, value={"valueIdentifier": identifiers(3)[0]})],
        {"identifier": identifiers(3, 1, 2)},
        id="insert in list #2",
    ),
    pytest.param(
        {"identifier": identifiers(1, 2, 3)},
        [operation("delete", "Patient.identifier[0]")],
        {"identifier": identifiers(2, 3)},
        id="delete from list #1",
    ),
    pytest.param(
        {"identifier": identifiers(1, 2, 3)},
        [operation("delete", "Patient.identifier[1]")],
        {"identifier": identifiers(1, 3)},
        id="delete from list #2",
    ),
    pytest.param(
        {"identifier": identifiers(1, 2, 3)},
        [operation("delete", "Patient.identifier[2]")],
        {"identifier": identifiers(1, 2)},
        id="delete from list #3",
    ),
    pytest.param(
        {"identifier": identifiers(1, 2, 3, 4)},
        [operation("move", "Patient.identifier", source=3, destination=1)],
        {"identifier": identifiers(1, 4, 2, 3)},
        id="reorder list #1",
    ),
    pytest.param(
        {"identifier": identifiers(1, 2, 3, 4)},
        [operation("move", "Patient.identifier", source=3, destination=0)],
        {"identifier": identifiers(4, 1, 2, 3)},
        id="reorder list #2",
    ),
    pytest.param(
        {"identifier": identifiers(1, 2, 3, 4)},
        [operation("move", "Patient.identifier", source=3, destination=2)],
        {"identifier": identifiers(1, 2, 4, 3)},
        id="reorder list #3",
    ),
    pytest.param(
        {"identifier": identifiers(1, 2, 3, 4)},
        [operation("move", "Patient.identifier", source=0, destination=3)],
        {"identifier": identifiers(2, 3, 4, 1)},
        id="reorder list #4",
    ),
    pytest.param(
        {"identifier": identifiers(1, 2, 3, 4)},
        [
            operation("move", "Patient.identifier", source=1, destination=0),
            operation("move", "Patient.identifier", source=2, destination=1),
        ],
        {"identifier": identifiers(2, 3, 1, 4)},
        id="reorder list #5",
    ),
    pytest.param(
        {"identifier": identifiers(1, 2, 3, 4)},
        [
            operation("move", "Patient.identifier", source=3, destination=0),
            operation("move", "Patient.identifier", source=3, destination=1),
            operation("move", "Patient.identifier", source=3, destination=2),
        ],
        {"identifier": identifiers(4, 3, 2, 1)},
        id="reorder list #6",
    ),
    pytest.param(
        {},
        [operation("add", "Patient", name="identifier", value={"valueIdentifier": identifiers(3)[0]})],
        {"identifier": identifiers(3)},
        id="operation on missing element #2 (add creates the list)",
    ),
]


@pytest.mark.parametrize(("before", "operations", "after"), HL7_TEST_CASES)
def test_hl7_fhirpath_patch_cases(
    before: dict[str, Any], operations: list[dict[str, Any]], after: dict[str, Any]
) -> None:
    resource = {"resourceType": "Patient", **before}
    assert apply_fhirpath_patch(resource, parameters(*operations)) == {"resourceType": "Patient", **after}


def test_hl7_operation_on_missing_element_is_422() -> None:
    resource = {"resourceType": "Patient", "identifier": [{"use": "official", "value": "123"}]}
    patch = parameters(
        operation(
            "add",
            "Patient.identifier.where(use = 'official').period",
            name="end",
            value={"valueDate": "2021-12-01"},
        )
    )
    with pytest.raises(UnprocessableEntity, match=r"Parameters\.parameter\[0\]: add failed: .* matches nothing"):
        apply_fhirpath_patch(resource, patch)


PATIENT_WITH_NAMES: dict[str, Any] = {
    "resourceType": "Patient",
    "birthDate": "1974-12-25",
    "_birthDate": {"extension": [{"url": "http://example.org/birthTime", "valueDateTime": "1974-12-25T14:35"}]},
    "name": [
        {"use": "official", "family": "Chalmers", "given": ["Peter", "James"], "_given": [None, {"id": "g2"}]},
        {"use": "usual", "given": ["Jim"]},
    ],
    "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@example.org"}],
    "extension": [{"url": "http://example.org/flag", "valueBoolean": True}],
}


def _names(*names: dict[str, Any]) -> dict[str, Any]:
    return {**PATIENT_WITH_NAMES, "name": list(names)}


OFFICIAL, USUAL = PATIENT_WITH_NAMES["name"]

FHIRPATH_CASES = [
    pytest.param(
        [operation("replace", "Patient.name.where(use = 'usual').given[0]", value={"valueString": "Jimmy"})],
        _names(OFFICIAL, {"use": "usual", "given": ["Jimmy"]}),
        id="replace through where()",
    ),
    pytest.param(
        [operation("delete", "Patient.name.where(use = 'usual')")],
        _names(OFFICIAL),
        id="delete through where()",
    ),
    pytest.param(
        [operation("delete", "Patient.name.where(use = 'temp')")],
        PATIENT_WITH_NAMES,
        id="delete of nothing is a no-op",
    ),
    pytest.param(
        [operation("replace", "Patient.name.first().family", value={"valueString": "Smith"})],
        _names({**OFFICIAL, "family": "Smith"}, USUAL),
        id="first()",
    ),
    pytest.param(
        [operation("add", "Patient.name.last()", name="family", value={"valueString": "Chalmers"})],
        _names(OFFICIAL, {**USUAL, "family": "Chalmers"}),
        id="last(), add a missing single element",
    ),
    pytest.param(
        [operation("add", "Patient.name[1]", name="given", value={"valueString": "J"})],
        _names(OFFICIAL, {**USUAL, "given": ["Jim", "J"]}),
        id="add appends to an existing list",
    ),
    pytest.param(
        [operation("add", "Patient.name[1]", name="prefix", value={"valueString": "Mr"})],
        _names(OFFICIAL, {**USUAL, "prefix": ["Mr"]}),
        id="add creates a list for a repeating datatype element",
    ),
    pytest.param(
        [operation("insert", "Patient.name[0].given", index=0, value={"valueString": "P"})],
        _names({**OFFICIAL, "given": ["P", "Peter", "James"], "_given": [None, None, {"id": "g2"}]}, USUAL),
        id="insert keeps _given aligned",
    ),
    pytest.param(
        [operation("delete", "Patient.name[0].given.where($this = 'Peter')")],
        _names({**OFFICIAL, "given": ["James"], "_given": [{"id": "g2"}]}, USUAL),
        id="delete a primitive list item with $this, _given aligned",
    ),
    pytest.param(
        [operation("move", "Patient.name[0].given", source=1, destination=0)],
        _names({**OFFICIAL, "given": ["James", "Peter"], "_given": [{"id": "g2"}, None]}, USUAL),
        id="move keeps _given aligned",
    ),
    pytest.param(
        [operation("insert", "Patient.address", index=0, value={"valueAddress": {"city": "Pleasantville"}})],
        {**PATIENT_WITH_NAMES, "address": [{"city": "Pleasantville"}]},
        id="insert into an absent list creates it",
    ),
    pytest.param(
        [operation("delete", "Patient.birthDate.extension('http://example.org/birthTime')")],
        {key: value for key, value in PATIENT_WITH_NAMES.items() if key != "_birthDate"},
        id="delete a primitive's extension, emptied _birthDate removed",
    ),
    pytest.param(
        [
            operation(
                "add",
                "Patient.name[1].given[0]",
                name="extension",
                value={"part": [{"name": "url", "valueUri": "http://x"}, {"name": "value", "valueCode": "N"}]},
            )
        ],
        _names(OFFICIAL, {**USUAL, "_given": [{"extension": [{"url": "http://x", "valueCode": "N"}]}]}),
        id="add an extension to a primitive list item",
    ),
    pytest.param(
        [operation("replace", "Patient.extension('http://example.org/flag').value", value={"valueBoolean": False})],
        {**PATIENT_WITH_NAMES, "extension": [{"url": "http://example.org/flag", "valueBoolean": False}]},
        id="extension(url) and a choice element",
    ),
    pytest.param(
        [operation("replace", "%resource.telecom.where(system = 'email').value", value={"valueString": "b@x.org"})],
        {**PATIENT_WITH_NAMES, "telecom": [PATIENT_WITH_NAMES["telecom"][0], {"system": "email", "value": "b@x.org"}]},
        id="%resource start",
    ),
    pytest.param(
        [operation("replace", "telecom.skip(1).value", value={"valueString": "b@x.org"})],
        {**PATIENT_WITH_NAMES, "telecom": [PATIENT_WITH_NAMES["telecom"][0], {"system": "email", "value": "b@x.org"}]},
        id="relative path and skip()",
    ),
    pytest.param(
        [operation("add", "Patient", name="deceased", value={"valueBoolean": False})],
        {**PATIENT_WITH_NAMES, "deceasedBoolean": False},
        id="add a choice element by its FHIRPath name",
    ),
    pytest.param(
        [
            operation(
                "add",
                "Patient",
                name="contact",
                value={
                    "part": [
                        {"name": "relationship", "valueCodeableConcept": {"text": "partner"}},
                        {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "2"}},
                        {"name": "telecom", "valueContactPoint": {"system": "email", "value": "c@x.org"}},
                        {"name": "gender", "valueCode": "female"},
                    ]
                },
            )
        ],
        {
            **PATIENT_WITH_NAMES,
            "contact": [
                {
                    "relationship": [{"text": "partner"}],
                    "telecom": [{"system": "phone", "value": "2"}, {"system": "email", "value": "c@x.org"}],
                    "gender": "female",
                }
            ],
        },
        id="complex value via parts, repeating children become lists",
    ),
    pytest.param(
        [operation("delete", "Patient.descendants().where(url = 'http://example.org/birthTime')")],
        {key: value for key, value in PATIENT_WITH_NAMES.items() if key != "_birthDate"},
        id="descendants() reaches a primitive's extension",
    ),
    pytest.param(
        [operation("delete", "(Patient.gender | Patient.birthDate)")],
        {key: value for key, value in PATIENT_WITH_NAMES.items() if key not in ("birthDate", "_birthDate")},
        id="union, one side empty; deleting a primitive takes its extensions",
    ),
    pytest.param(
        [operation("replace", "Patient.children().where(system = 'email').value", value={"valueString": "e"})],
        {**PATIENT_WITH_NAMES, "telecom": [PATIENT_WITH_NAMES["telecom"][0], {"system": "email", "value": "e"}]},
        id="children()",
    ),
    pytest.param(
        [operation("replace", "Patient.extension.value.as(boolean)", value={"valueBoolean": False})],
        {**PATIENT_WITH_NAMES, "extension": [{"url": "http://example.org/flag", "valueBoolean": False}]},
        id="as(Type)",
    ),
    pytest.param(
        [
            operation("delete", "Patient.telecom[1]"),
            operation("replace", "Patient.telecom.single().value", value={"valueString": "2"}),
        ],
        {**PATIENT_WITH_NAMES, "telecom": [{"system": "phone", "value": "2"}]},
        id="operations apply in order",
    ),
]


@pytest.mark.parametrize(("operations", "expected"), FHIRPATH_CASES)
def test_fhirpath_patch_on_a_patient(operations: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    assert apply_fhirpath_patch(PATIENT_WITH_NAMES, parameters(*operations)) == expected


OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"text": "blood pressure"},
    "valueQuantity": {"value": 120, "unit": "mmHg"},
    "component": [
        {"code": {"text": "systolic"}, "valueQuantity": {"value": 120}},
        {"code": {"text": "note"}, "valueString": "sitting"},
    ],
}


def test_choice_element_navigates_by_its_fhirpath_name_and_of_type() -> None:
    patch = parameters(operation("replace", "Observation.value.ofType(Quantity).value", value={"valueDecimal": 121}))
    result = apply_fhirpath_patch(OBSERVATION, patch)
    assert result["valueQuantity"] == {"value": 121, "unit": "mmHg"}


def test_replacing_a_choice_element_may_change_its_type() -> None:
    patch = parameters(operation("replace", "Observation.value", value={"valueString": "high"}))
    result = apply_fhirpath_patch(OBSERVATION, patch)
    assert result["valueString"] == "high"
    assert "valueQuantity" not in result


def test_where_criteria_see_choice_types() -> None:
    patch = parameters(operation("delete", "Observation.component.where(value.ofType(Quantity).value > 100)"))
    assert apply_fhirpath_patch(OBSERVATION, patch)["component"] == [OBSERVATION["component"][1]]


FHIRPATH_UNPROCESSABLE = [
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("replace", "Patient.name.where(use = 'temp').family", value={"valueString": "x"}),
        "matches nothing",
        id="replace of nothing",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("replace", "Patient.name.given", value={"valueString": "x"}),
        "matches 3 elements",
        id="replace needs one element",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("delete", "Patient.telecom"),
        "only one can be deleted",
        id="delete of two elements",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("add", "Patient.name", name="text", value={"valueString": "x"}),
        "matches 2 elements",
        id="add needs one element",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("add", "Patient", name="birthDate", value={"valueDate": "2000"}),
        "already exists",
        id="add of an existing single element",
    ),
    pytest.param(
        OBSERVATION,
        operation("add", "Observation", name="value", value={"valueString": "x"}),
        "already exists",
        id="add of an existing choice element",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("insert", "Patient.telecom", index=3, value={"valueContactPoint": {}}),
        "index 3 is out of range",
        id="insert past the end",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("insert", "Patient.telecom", index=-1, value={"valueContactPoint": {}}),
        "out of range",
        id="insert at a negative index",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("insert", "Patient.name[0].family", index=0, value={"valueString": "x"}),
        "not a repeating element",
        id="insert into a single element",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("insert", "Patient.name.given", index=0, value={"valueString": "x"}),
        "matches 2 elements",
        id="insert into lists of two parents",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("move", "Patient.telecom", source=2, destination=0),
        "source 2 is out of range",
        id="move from out of range",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("move", "Patient.telecom", source=0, destination=2),
        "destination 2 is out of range",
        id="move to out of range",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("delete", "Patient"),
        "resource itself",
        id="delete the resource",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("delete", "Patient.name | Patient.telecom"),
        "matches 4 elements",
        id="delete of a union of four",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("delete", "Patient.name.where(use > 1)"),
        "could not be evaluated",
        id="where() criteria fail to evaluate",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("add", "Patient.birthDate", name="family", value={"valueString": "x"}),
        "primitive",
        id="add a child to a primitive",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("add", "Patient", name="maritalStatus", value={"valueCoding": {"code": "M"}}),
        "is a Coding but the element holds a CodeableConcept",
        id="wrong complex type",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("replace", "Patient.birthDate", value={"valuePeriod": {"start": "2000"}}),
        "is a Period but the element holds a date",
        id="complex value for a primitive",
    ),
    pytest.param(
        OBSERVATION,
        operation("replace", "Observation.value", value={"valueHumanName": {"text": "x"}}),
        "does not allow the type HumanName",
        id="type not allowed for a choice",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("add", "Patient", name="deceased", value={"part": [{"name": "x", "valueString": "y"}]}),
        "choice element",
        id="choice element value without a type",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("replace", "Patient.telecom.single().value", value={"valueString": "x"}),
        r"single\(\)",
        id="single() on two elements",
    ),
    pytest.param(
        PATIENT_WITH_NAMES,
        operation("delete", "Patient.name['a']"),
        "index in the path does not evaluate to a single integer",
        id="non-integer index",
    ),
]


@pytest.mark.parametrize(("resource", "op", "message"), FHIRPATH_UNPROCESSABLE)
def test_fhirpath_patch_that_cannot_apply_is_422(resource: dict[str, Any], op: dict[str, Any], message: str) -> None:
    patch = parameters(operation("delete", "Patient.id"), op)
    with pytest.raises(UnprocessableEntity, match=message) as caught:
        apply_fhirpath_patch(resource, patch)
    assert caught.value.status == 422
    assert caught.value.diagnostics.startswith("Parameters.parameter[1]: ")
    assert caught.value.issues[0].expression == ("Parameters.parameter[1]",)


VALID = operation("delete", "Patient.id")

FHIRPATH_MALFORMED = [
    pytest.param([], "must be a Parameters resource", id="a list"),
    pytest.param({"resourceType": "Patient"}, "must be a Parameters resource", id="another resource"),
    pytest.param({"resourceType": "Parameters", "parameter": {}}, "must be an array", id="parameter not a list"),
    pytest.param(parameters(VALID, "x"), r"parameter\[1\]: a parameter must be a JSON object", id="not an object"),
    pytest.param(parameters({**VALID, "name": "op"}), "must be named 'operation'", id="wrong parameter name"),
    pytest.param(parameters({"name": "operation"}), "must have parts", id="operation without parts"),
    pytest.param(parameters({"name": "operation", "part": []}), "must have parts", id="empty parts"),
    pytest.param(
        parameters({"name": "operation", "part": [{"name": "path", "valueString": "Patient.id"}]}),
        "'type' part is required",
        id="missing type",
    ),
    pytest.param(parameters(operation("upsert", "Patient.id")), "'type' must be one of", id="unknown type"),
    pytest.param(
        parameters({"name": "operation", "part": [{"name": "type", "valueCode": "delete"}]}),
        "'path' part is required for delete",
        id="missing path",
    ),
    pytest.param(parameters(operation("replace", "Patient.id")), "'value' part is required", id="missing value"),
    pytest.param(
        parameters(operation("add", "Patient", value={"valueString": "x"})),
        "'name' part is required for add",
        id="add without name",
    ),
    pytest.param(
        parameters(operation("insert", "Patient.name", value={"valueHumanName": {}})),
        "'index' part is required",
        id="insert without index",
    ),
    pytest.param(
        parameters(operation("move", "Patient.name", source=0)),
        "'destination' part is required",
        id="move without destination",
    ),
    pytest.param(
        parameters(
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "insert"},
                    {"name": "path", "valueString": "Patient.name"},
                    {"name": "index", "valueString": "0"},
                    {"name": "value", "valueHumanName": {}},
                ],
            }
        ),
        "needs valueInteger",
        id="index not an integer",
    ),
    pytest.param(
        parameters({**VALID, "part": [*VALID["part"], {"name": "colour", "valueString": "x"}]}),
        "unknown part name",
        id="unknown part",
    ),
    pytest.param(
        parameters({**VALID, "part": [*VALID["part"], VALID["part"][1]]}),
        "appears more than once",
        id="duplicate part",
    ),
    pytest.param(parameters(operation("delete", "Patient.name.where(use = ")), "syntax error", id="bad FHIRPath"),
    pytest.param(parameters(operation("delete", "Patient..name")), "syntax error", id="double dot"),
    pytest.param(parameters(operation("delete", "Patient.name given")), "syntax error", id="trailing tokens"),
    pytest.param(parameters(operation("delete", "   ")), "empty", id="empty path"),
    pytest.param(
        parameters(operation("delete", "Patient.name.exists()")), r"exists\(\) is not supported", id="exists()"
    ),
    pytest.param(
        parameters(operation("delete", "Patient.managingOrganization.resolve()")),
        r"resolve\(\) is not supported",
        id="resolve()",
    ),
    pytest.param(parameters(operation("delete", "Patient.birthDate + 'x'")), "not supported", id="an operator"),
    pytest.param(parameters(operation("delete", "Patient.name.select(given)")), "not supported", id="select()"),
    pytest.param(parameters(operation("delete", "%ucum.name")), "cannot start a patch path", id="other constant"),
    pytest.param(parameters(operation("delete", "Patient.name.first(1)")), "takes 0 argument", id="wrong arity"),
    pytest.param(
        parameters(operation("insert", "Patient.name.first()", index=0, value={"valueHumanName": {}})),
        "must end with the name of the repeating element",
        id="insert path not ending in a name",
    ),
    pytest.param(
        parameters(operation("replace", "Patient.id", value={"valueString": "a", "valueId": "b"})),
        "exactly one of value",
        id="two value[x]",
    ),
    pytest.param(
        parameters(operation("replace", "Patient.id", value={})),
        "exactly one of value",
        id="value part without a value",
    ),
    pytest.param(
        parameters(operation("add", "Patient", name="contact", value={"part": [{"valueString": "x"}]})),
        "named after an element",
        id="value part without a name",
    ),
    pytest.param(
        parameters(operation("add", "Patient", name="a.b", value={"valueString": "x"})),
        "'name' must be an element name",
        id="name not an element name",
    ),
]


@pytest.mark.parametrize(("document", "message"), FHIRPATH_MALFORMED)
def test_malformed_fhirpath_patch_is_400(document: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        apply_fhirpath_patch(PATIENT_WITH_NAMES, document)
    assert caught.value.status == 400


def test_malformed_operation_is_reported_with_its_index_before_anything_runs() -> None:
    patch = parameters(
        operation("replace", "Patient.nothing", value={"valueString": "x"}),
        operation("delete", "Patient.name.where("),
    )
    with pytest.raises(BadRequest, match=r"^Parameters\.parameter\[1\]: path: syntax error") as caught:
        apply_fhirpath_patch(PATIENT_WITH_NAMES, patch)
    assert caught.value.issues[0].expression == ("Parameters.parameter[1]",)


def test_fhirpath_patch_returns_a_new_object_sharing_nothing_with_its_inputs() -> None:
    resource = copy.deepcopy(PATIENT_WITH_NAMES)
    patch = parameters(
        operation("add", "Patient", name="maritalStatus", value={"valueCodeableConcept": {"text": "married"}}),
        operation("delete", "Patient.birthDate"),
    )
    snapshot = copy.deepcopy(patch)
    result = apply_fhirpath_patch(resource, patch)
    result["maritalStatus"]["text"] = "changed"
    result["name"][0]["given"].append("X")
    assert resource == PATIENT_WITH_NAMES
    assert patch == snapshot


def test_a_custom_repeats_rule_decides_the_shape_of_new_elements() -> None:
    patch = parameters(operation("add", "Patient", name="birthDate", value={"valueDate": "2000"}))
    result = apply_fhirpath_patch({"resourceType": "Patient"}, patch, repeats=lambda path: path == "Patient.birthDate")
    assert result["birthDate"] == ["2000"]


@pytest.mark.parametrize(
    ("path", "repeats"),
    [
        ("Patient.name", True),
        ("Organization.name", False),
        ("Patient.contact.name", False),
        ("Patient.contact.relationship", True),
        ("Patient.identifier", True),
        ("Reference.identifier", False),
        ("HumanName.given", True),
        ("HumanName.family", False),
        ("Meta.profile", True),
        ("Observation.component", True),
        ("Observation.value", False),
        ("Questionnaire.item.item", True),
        ("Patient.notAnElement", False),
    ],
)
def test_default_repeats_follows_r4_cardinalities(path: str, repeats: bool) -> None:
    assert default_repeats(path) is repeats


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def test_absurdly_nested_json_patch_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="nested too deeply"):
        apply_json_patch(PATIENT, [{"op": "add", "path": "/x", "value": _nested(50_000)}])


def test_absurdly_nested_fhirpath_patch_value_is_a_bad_request() -> None:
    value: dict[str, Any] = {"valueString": "leaf"}
    for _ in range(50_000):
        value = {"part": [{"name": "x", **value}]}
    patch = parameters(operation("add", "Patient", name="contact", value=value))
    with pytest.raises(BadRequest, match="nested too deeply"):
        apply_fhirpath_patch(PATIENT_WITH_NAMES, patch)


# ---------------------------------------------------------------------- property tests

json_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


def _mangled(document: dict[str, Any], member: str | None, junk: Any) -> dict[str, Any]:
    """``document`` with one member dropped (junk None) or replaced by junk."""
    if member is None:
        return document
    changed = {key: value for key, value in document.items() if key != member}
    if junk is not None:
        changed[member] = junk
    return changed


# Mostly well-formed operations on the members PATIENT has, so most examples get past
# parsing and exercise the appliers; some are mangled, some documents are plain junk.
pointer_tokens = ["name", "0", "1", "-", "given", "family", "telecom", "system", "birthDate", "active", "01", "~0", ""]
pointers = st.lists(st.sampled_from(pointer_tokens), max_size=4).map(lambda ts: "".join("/" + t for t in ts))
well_formed_json_operations = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test"]),
        "path": pointers,
        "from": pointers,
        "value": json_values,
    }
)
json_operations = st.one_of(
    *[well_formed_json_operations] * 6,
    st.builds(
        _mangled,
        well_formed_json_operations,
        st.sampled_from(["op", "path", "from", "value", None]),
        st.none() | json_values | st.text(max_size=4),
    ),
)
json_documents = st.one_of(
    st.lists(well_formed_json_operations, max_size=4),
    st.lists(well_formed_json_operations, max_size=4),
    st.lists(json_operations, max_size=4),
    json_values,
)

fhirpaths = st.sampled_from(
    [
        "Patient",
        "Patient.name",
        "Patient.name[0]",
        "Patient.name[1].given",
        "Patient.name[0].given",
        "Patient.name.where(use = 'official')",
        "Patient.name.first().given",
        "Patient.name.last()",
        "Patient.telecom",
        "Patient.telecom[1]",
        "Patient.birthDate",
        "Patient.birthDate.extension",
        "Patient.extension('http://example.org/flag').value",
        "Patient.extension.value.ofType(boolean)",
        "Patient.deceased",
        "Patient.address",
        "name.given.where($this = 'Peter')",
        "Patient.descendants().where(url = 'http://example.org/flag')",
        "Patient.children().first()",
        "(Patient.name | Patient.telecom).last()",
        "Patient.name.given.distinct()",
        "Patient.name.where(",
        "Patient.name[99]",
        "Patient.name.exists()",
        "",
    ]
)
fhirpath_values = st.one_of(
    st.builds(lambda text: {"valueString": text}, st.text(max_size=5)),
    st.builds(lambda text: {"valueHumanName": {"text": text}}, st.text(max_size=5)),
    st.builds(lambda flag: {"valueBoolean": flag}, st.booleans()),
    st.builds(lambda value: {"valueCodeableConcept": value}, json_values),
    st.builds(lambda value: {"valueString": value, "_valueString": value}, json_values),
    st.lists(
        st.builds(
            lambda name, text: {"name": name, "valueString": text},
            st.sampled_from(["given", "text", "family", "use", "value", "x"]),
            st.text(max_size=3),
        ),
        min_size=1,
        max_size=3,
    ).map(lambda parts: {"part": parts}),
)


def _fhirpath_operation(kind: str, path: str, name: str, value: dict[str, Any], positions: list[int]) -> dict[str, Any]:
    index, source, destination = positions
    return operation(kind, path, name=name, value=value, index=index, source=source, destination=destination)


well_formed_fhirpath_operations = st.builds(
    _fhirpath_operation,
    st.sampled_from(["add", "insert", "delete", "replace", "move"]),
    fhirpaths,
    st.sampled_from(["given", "text", "family", "deceased", "extension", "maritalStatus", "telecom"]),
    fhirpath_values,
    st.lists(st.integers(-1, 3), min_size=3, max_size=3),
)
fhirpath_operations = st.one_of(
    *[well_formed_fhirpath_operations] * 8,
    st.builds(
        lambda op, position, junk: {**op, "part": [junk if i == position else p for i, p in enumerate(op["part"])]},
        well_formed_fhirpath_operations,
        st.integers(0, 6),
        json_values,
    ),
    st.builds(_mangled, well_formed_fhirpath_operations, st.sampled_from(["name", "part"]), json_values),
)


def _parameters_of(operations: list[Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": operations}


fhirpath_documents = st.one_of(
    st.lists(well_formed_fhirpath_operations, max_size=3).map(_parameters_of),
    st.lists(well_formed_fhirpath_operations, max_size=3).map(_parameters_of),
    st.lists(fhirpath_operations, max_size=3).map(_parameters_of),
    json_values,
)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(json_documents)
def test_json_patch_raises_only_fhir_errors_and_never_mutates(document: Any) -> None:
    resource, snapshot = copy.deepcopy(PATIENT), copy.deepcopy(document)
    outcome: object
    try:
        outcome = apply_json_patch(resource, document)
    except FhirError as error:
        outcome = error
    if isinstance(outcome, FhirError):
        assert outcome.status in (400, 422)
    else:
        assert isinstance(outcome, dict)
        assert outcome is not resource
    assert resource == PATIENT
    assert document == snapshot


@PROPERTY_SETTINGS
@given(fhirpath_documents)
def test_fhirpath_patch_raises_only_fhir_errors_and_never_mutates(document: Any) -> None:
    resource, snapshot = copy.deepcopy(PATIENT_WITH_NAMES), copy.deepcopy(document)
    outcome: object
    try:
        outcome = apply_fhirpath_patch(resource, document)
    except FhirError as error:
        outcome = error
    if isinstance(outcome, FhirError):
        assert outcome.status in (400, 422)
    else:
        assert isinstance(outcome, dict)
        assert outcome is not resource
    assert resource == PATIENT_WITH_NAMES
    assert document == snapshot
