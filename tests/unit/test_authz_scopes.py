"""The SMART scope grammar: v1, v2, granular, and the scopes that must grant nothing."""

from __future__ import annotations

import pytest

from fhirflow.authz.principal import parse_fhir_user, parse_patient
from fhirflow.authz.scopes import parse_scope, parse_scopes, scope_strings
from tests.unit.test_authz_kit import LAB


@pytest.mark.parametrize(
    ("text", "context", "rtype", "permissions"),
    [
        ("patient/Observation.read", "patient", "Observation", "rs"),  # v1 .read ⇒ v2 .rs
        ("patient/Observation.write", "patient", "Observation", "cud"),  # v1 .write ⇒ v2 .cud
        ("user/Observation.*", "user", "Observation", "cruds"),  # v1 .* ⇒ v2 .cruds
        ("system/*.*", "system", "*", "cruds"),
        ("patient/*.read", "patient", "*", "rs"),
        ("patient/Observation.rs", "patient", "Observation", "rs"),
        ("user/*.cruds", "user", "*", "cruds"),
        ("system/Patient.c", "system", "Patient", "c"),
        ("patient/Condition.cu", "patient", "Condition", "cu"),
        ("patient/Encounter.ds", "patient", "Encounter", "ds"),
    ],
)
def test_v1_and_v2_scopes_parse_to_permission_letters(text: str, context: str, rtype: str, permissions: str) -> None:
    scope = parse_scope(text)

    assert scope is not None
    assert (scope.context, scope.resource_type, scope.permissions, scope.filters) == (context, rtype, permissions, ())


def test_a_granular_scope_keeps_its_search_parameters() -> None:
    scope = parse_scope(f"patient/Observation.rs?category={LAB}&status=final")

    assert scope is not None
    assert scope.permissions == "rs"
    assert scope.filters == (("category", LAB), ("status", "final"))
    assert scope.is_granular


@pytest.mark.parametrize(
    "text",
    [
        "openid",
        "fhirUser",
        "launch/patient",
        "offline_access",
        "patient/Observation.dus",  # out of order: the spec says it MAY be ignored; we do
        "patient/Observation.rr",
        "patient/Observation.x",
        "patient/Observation.",
        "patient/Observation",
        "patient/.rs",
        "practitioner/Observation.rs",  # not a SMART context
        "patient/NotAType.rs",  # not an R4 resource type
        "patient/observation.rs",  # types are case-sensitive
        "patient/Observation.read?category=x",  # granular constraints exist only in v2 syntax
        "patient/Observation.rs?category",  # a parameter without a value
        "patient/Observation.rs?",
    ],
)
def test_scopes_that_grant_nothing(text: str) -> None:
    assert parse_scope(text) is None


def test_the_scope_claim_may_be_a_string_or_an_array() -> None:
    assert scope_strings("patient/*.rs  openid fhirUser") == ["patient/*.rs", "openid", "fhirUser"]
    assert scope_strings(["patient/*.rs", "user/Observation.r"]) == ["patient/*.rs", "user/Observation.r"]
    assert scope_strings(None) == []
    assert scope_strings(42) == []


def test_grants_by_permission_and_type() -> None:
    scopes = parse_scopes("patient/Observation.rs patient/*.c user/Patient.read openid")

    assert [s.text for s in scopes.grants("r", "Observation")] == ["patient/Observation.rs"]
    assert [s.text for s in scopes.grants("c", "Observation")] == ["patient/*.c"]
    assert [s.text for s in scopes.grants("s", "Patient")] == ["user/Patient.read"]
    assert scopes.grants("d", "Observation") == ()
    assert scopes.grants("u", None) == ()
    # Equivalence (scopes-and-launch-context.html#scope-equivalence): .rs is .r plus .s
    split = parse_scopes("patient/Observation.r patient/Observation.s")
    assert split.grants("r", "Observation")
    assert split.grants("s", "Observation")


def test_fhir_user_and_patient_claims() -> None:
    assert parse_fhir_user("https://ehr.example.org/fhir/Practitioner/123") == ("Practitioner", "123")
    assert parse_fhir_user("Patient/p1") == ("Patient", "p1")
    assert parse_fhir_user("RelatedPerson/r1/_history/2") == ("RelatedPerson", "r1")
    assert parse_fhir_user("Observation/o1") is None
    assert parse_fhir_user("123") is None
    assert parse_fhir_user(None) is None
    assert parse_patient("p1") == "p1"
    assert parse_patient("Patient/p1") == "p1"
    assert parse_patient("") is None
    assert parse_patient(7) is None
