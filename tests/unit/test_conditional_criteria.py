"""Conditional criteria: strict parsing and the normal form behind the uniqueness key (fhirflow.conditional)."""

from __future__ import annotations

import pytest

from fhirflow.conditional import conditional_reference, parse_criteria, parse_query_string
from fhirflow.errors import BadRequest


def key(query: str, rtype: str = "Patient", tenant: str = "default") -> str:
    return parse_query_string(rtype, query).key(tenant)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # AND-ed parameters in any order
        ("identifier=http://x|123&gender=male", "gender=male&identifier=http://x|123"),
        # OR-ed values in any order, and repeated ones
        ("identifier=http://x|1,http://x|2", "identifier=http://x|2,http://x|1,http://x|2"),
        # a criterion repeated
        ("identifier=http://x|1&identifier=http://x|1", "identifier=http://x|1"),
        # URL encoding is not part of the criteria
        ("identifier=http%3A%2F%2Fx%7C123", "identifier=http://x|123"),
        # string search folds case and accents
        ("family=Ch%C3%A1vez", "family=chavez"),
        # the eq prefix is the default
        ("birthdate=eq1970-01-01", "birthdate=1970-01-01"),
        # one instant written two ways
        ("_lastUpdated=2020-01-01T10:00:00Z", "_lastUpdated=2020-01-01T10:00:00%2B00:00"),
        # a typed reference is Type/id
        ("general-practitioner:Practitioner=abc", "general-practitioner=Practitioner/abc"),
        # transport parameters are not criteria
        ("identifier=http://x|1&_format=json", "identifier=http://x|1"),
        # the Type? form of Bundle.entry.request.ifNoneExist
        ("Patient?identifier=http://x|1", "identifier=http://x|1"),
    ],
)
def test_equivalent_spellings_have_one_key(first: str, second: str) -> None:
    assert key(first) == key(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("identifier=http://x|123", "identifier=http://x|124"),
        ("identifier=http://x|123", "identifier=123"),  # any system is not this system
        ("family=smith", "family:exact=smith"),
        ("family:exact=Smith", "family:exact=smith"),  # exact keeps case
        ("birthdate=1970", "birthdate=1970-01-01"),  # a year is a wider range than a day
        ("birthdate=ge1970-01-01", "birthdate=1970-01-01"),
        ("identifier=http://x|1&gender=male", "identifier=http://x|1"),
    ],
)
def test_different_criteria_have_different_keys(first: str, second: str) -> None:
    assert key(first) != key(second)


def test_the_key_is_per_tenant_and_type() -> None:
    assert key("identifier=http://x|1", tenant="a") != key("identifier=http://x|1", tenant="b")
    assert key("identifier=http://x|1", rtype="Patient") != key("identifier=http://x|1", rtype="Practitioner")


def test_the_key_is_a_sha256_of_the_normal_form() -> None:
    import hashlib

    criteria = parse_query_string("Patient", "identifier=http://x|1&gender=male")
    assert criteria.canonical == "gender=male&identifier=http://x|1"
    expected = hashlib.sha256(b"default\nPatient\ngender=male&identifier=http://x|1").hexdigest()
    assert criteria.key("default") == expected


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("", "needs search criteria"),
        ("_format=json", "needs search criteria"),
        ("nonsense=1", "Unknown search parameter 'nonsense'"),
        ("identifier:bogus=1", "Unknown modifier"),
        ("identifier=", "has no value"),
        ("identifier=http://x|1&_count=1", "'_count' controls how results are returned"),
        ("identifier=http://x|1&_sort=name", "'_sort'"),
        ("identifier=http://x|1&_include=Patient:organization", "'_include'"),
        ("birthdate=1970-13-45", "is not a FHIR date"),
    ],
)
def test_bad_criteria_are_refused(query: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_query_string("Patient", query, where="If-None-Exist")
    assert caught.value.status == 400
    assert fragment in caught.value.diagnostics
    assert caught.value.diagnostics.startswith("If-None-Exist")


def test_criteria_naming_another_type_are_refused() -> None:
    with pytest.raises(BadRequest, match="about 'Observation', not Patient"):
        parse_query_string("Patient", "Observation?code=1")


def test_url_criteria_come_as_pairs() -> None:
    criteria = parse_criteria("Patient", [("identifier", "http://x|1"), ("_pretty", "true")])
    assert criteria.canonical == "identifier=http://x|1"


def test_conditional_references_are_recognised() -> None:
    assert conditional_reference("Patient?identifier=http://x|1") == ("Patient", "identifier=http://x|1")
    assert conditional_reference("Patient/123") is None
    assert conditional_reference("urn:uuid:1234") is None
    assert conditional_reference("#contained") is None
    assert conditional_reference("http://other/Patient?x=1") is None
