"""The FHIR search parser: table-driven rows per type, prefix, modifier, chain, _has, result
parameters and escapes; the error cases; and a property test over random query strings."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhirflow.errors import BadRequest, FhirError
from fhirflow.query.ast import (
    Chain,
    CompositeQuery,
    DateQuery,
    Filter,
    Has,
    Include,
    MissingQuery,
    NearQuery,
    NumberQuery,
    OfTypeQuery,
    QuantityQuery,
    Query,
    ReferenceQuery,
    SpecialQuery,
    StringQuery,
    TokenQuery,
    UriQuery,
)
from fhirflow.query.parser import parse
from fhirflow.searchparams.dates import date_range
from fhirflow.searchparams.registry import default_registry


def q(resource_type: str | None, query: str, *, strict: bool = True) -> Query:
    return parse(resource_type, parse_qsl(query, keep_blank_values=True), strict=strict)


def only_filter(query: Query) -> Filter:
    [criterion] = query.criteria
    assert isinstance(criterion, Filter)
    return criterion


def day(text: str) -> tuple[int, int]:
    found = date_range(text)
    assert found is not None
    return found


# ---------------------------------------------------------------------------------------------
# One value per parameter type, with prefixes and modifiers: (type, query, modifier, values)

VALUE_ROWS = [
    ("Patient", "name=Pet%C3%A9r", None, [StringQuery("Petér", "peter")]),
    ("Patient", "name:exact=Peter", "exact", [StringQuery("Peter", "peter")]),
    ("Patient", "name:contains=ete", "contains", [StringQuery("ete", "ete")]),
    ("Patient", "name:missing=true", "missing", [MissingQuery(True)]),
    ("Patient", "gender=male,female", None, [TokenQuery(None, "male"), TokenQuery(None, "female")]),
    ("Patient", "identifier=http://acme|123", None, [TokenQuery("http://acme", "123")]),
    ("Patient", "identifier=|123", None, [TokenQuery("", "123")]),
    ("Patient", "identifier=http://acme|", None, [TokenQuery("http://acme", None)]),
    ("Observation", "code:text=Hémoglobine", "text", [StringQuery("Hémoglobine", "hemoglobine")]),
    ("Observation", "code:not=http://loinc.org|1234-5", "not", [TokenQuery("http://loinc.org", "1234-5")]),
    ("Observation", "code:above=http://snomed.info/sct|3738000", "above",
     [TokenQuery("http://snomed.info/sct", "3738000")]),
    ("Observation", "code:below=http://snomed.info/sct|235862008", "below",
     [TokenQuery("http://snomed.info/sct", "235862008")]),
    ("Observation", "code:in=http://example.org/ValueSet/vs", "in", [UriQuery("http://example.org/ValueSet/vs")]),
    ("Observation", "code:not-in=http://example.org/ValueSet/vs", "not-in", [UriQuery("http://example.org/ValueSet/vs")]),
    ("Patient", "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|446053", "of-type",
     [OfTypeQuery("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "446053")]),
    ("Patient", "birthdate=2013-01-14", None, [DateQuery("eq", "2013-01-14", *day("2013-01-14"))]),
    ("Patient", "birthdate=ne2013", None, [DateQuery("ne", "2013", *day("2013"))]),
    ("Patient", "birthdate=gt2013-01", None, [DateQuery("gt", "2013-01", *day("2013-01"))]),
    ("Patient", "birthdate=lt2013-01-14T10:00", None, [DateQuery("lt", "2013-01-14T10:00", *day("2013-01-14T10:00"))]),
    ("Patient", "birthdate=ge2013-01-14T10:00:00Z", None,
     [DateQuery("ge", "2013-01-14T10:00:00Z", *day("2013-01-14T10:00:00Z"))]),
    ("Patient", "birthdate=le2013-01-14T10:00:00%2B10:00", None,
     [DateQuery("le", "2013-01-14T10:00:00+10:00", *day("2013-01-14T10:00:00+10:00"))]),
    ("Patient", "birthdate=sa2013-01-14T10:00:00 10:00", None,
     [DateQuery("sa", "2013-01-14T10:00:00+10:00", *day("2013-01-14T10:00:00+10:00"))]),
    ("Patient", "birthdate=eb2013", None, [DateQuery("eb", "2013", *day("2013"))]),
    ("Patient", "birthdate=ap2013-06", None, [DateQuery("ap", "2013-06", *day("2013-06"))]),
    ("Patient", "birthdate:missing=false", "missing", [MissingQuery(False)]),
    ("RiskAssessment", "probability=100", None, [NumberQuery("eq", Decimal(100), Decimal("99.5"), Decimal("100.5"))]),
    ("RiskAssessment", "probability=gt0.80", None,
     [NumberQuery("gt", Decimal("0.80"), Decimal("0.795"), Decimal("0.805"))]),
    ("RiskAssessment", "probability=1e2", None, [NumberQuery("eq", Decimal("1e2"), Decimal(50), Decimal(150))]),
    ("Observation", "value-quantity=5.4|http://unitsofmeasure.org|mg", None,
     [QuantityQuery("eq", Decimal("5.4"), Decimal("5.35"), Decimal("5.45"), "http://unitsofmeasure.org", "mg")]),
    ("Observation", "value-quantity=le5.4||mg", None,
     [QuantityQuery("le", Decimal("5.4"), Decimal("5.35"), Decimal("5.45"), None, "mg")]),
    ("Observation", "value-quantity=ap5", None,
     [QuantityQuery("ap", Decimal(5), Decimal("4.5"), Decimal("5.5"), None, None)]),
    ("Observation", "subject=Patient/123", None, [ReferenceQuery("Patient", "123")]),
    ("Observation", "subject=123", None, [ReferenceQuery(None, "123")]),
    ("Observation", "subject:Patient=123", None, [ReferenceQuery("Patient", "123")]),
    ("Observation", "subject=Patient/123/_history/2", None, [ReferenceQuery("Patient", "123", "2")]),
    ("Observation", "subject=http://other.org/fhir/Patient/9", None,
     [ReferenceQuery("Patient", "9", None, "http://other.org/fhir/Patient/9")]),
    ("Observation", "subject:identifier=http://npi|42", "identifier", [TokenQuery("http://npi", "42")]),
    ("Observation", "subject:missing=true", "missing", [MissingQuery(True)]),
    ("QuestionnaireResponse", "questionnaire=http://example.org/Questionnaire/q|2.0", None,
     [ReferenceQuery(None, None, "2.0", "http://example.org/Questionnaire/q")]),
    ("ValueSet", "url=http://example.org/vs", None, [UriQuery("http://example.org/vs")]),
    ("ValueSet", "url:below=http://example.org/", "below", [UriQuery("http://example.org/")]),
    ("ValueSet", "url:above=http://example.org/vs/x", "above", [UriQuery("http://example.org/vs/x")]),
    ("Observation", "code-value-quantity=http://loinc.org|8480-6$gt150|http://unitsofmeasure.org|mm[Hg]", None,
     [CompositeQuery((TokenQuery("http://loinc.org", "8480-6"),
                      QuantityQuery("gt", Decimal(150), Decimal("149.5"), Decimal("150.5"),
                                    "http://unitsofmeasure.org", "mm[Hg]")))]),
    ("Location", "near=42.25|-83.7|11.2|km", None,
     [NearQuery(Decimal("42.25"), Decimal("-83.7"), Decimal("11.2"), "km")]),
    ("Patient", "_list=42", None, [SpecialQuery("42")]),
    ("Patient", "_id=a,b", None, [TokenQuery(None, "a"), TokenQuery(None, "b")]),
    ("Patient", "_lastUpdated=gt2020", None, [DateQuery("gt", "2020", *day("2020"))]),
    ("Patient", "_text=cardiology", None, [StringQuery("cardiology", "cardiology")]),
    # escapes: \, \$ \| and \\ are literal; unescaped , separates alternatives
    ("Patient", "name=a\\,b,c\\$d\\|e\\\\f", None, [StringQuery("a,b", "a,b"), StringQuery("c$d|e\\f", "c$d|e\\f")]),
    ("Patient", "identifier=http://a\\|b|x\\,y", None, [TokenQuery("http://a|b", "x,y")]),
]  # fmt: skip


@pytest.mark.parametrize(("resource_type", "query", "modifier", "values"), VALUE_ROWS)
def test_values(resource_type, query, modifier, values):
    parsed = only_filter(q(resource_type, query))
    assert parsed.modifier == modifier
    assert list(parsed.values) == values


@pytest.mark.parametrize(("resource_type", "query", "_modifier", "_values"), VALUE_ROWS)
def test_rendering_round_trips(resource_type, query, _modifier, _values):
    parsed = q(resource_type, query)
    again = q(resource_type, parsed.to_query_string())
    assert again.criteria == parsed.criteria


# ---------------------------------------------------------------------------------------------
# Chains and reverse chains


def test_chain_with_type():
    chain = q("Observation", "subject:Patient.name=peter").criteria[0]
    assert isinstance(chain, Chain)
    assert (chain.param.code, chain.target_type) == ("subject", "Patient")
    assert chain.criterion == Filter(default_registry().get("Patient", "name"), None, (StringQuery("peter", "peter"),))  # type: ignore[arg-type]


def test_chain_type_resolved_from_the_registry_and_nested():
    chain = q("Observation", "patient.organization.name:exact=Acme").criteria[0]
    assert isinstance(chain, Chain)
    assert chain.target_type == "Patient"
    inner = chain.criterion
    assert isinstance(inner, Chain)
    assert (inner.param.code, inner.target_type) == ("organization", "Organization")
    assert isinstance(inner.criterion, Filter)
    assert inner.criterion.modifier == "exact"
    assert q("Observation", "patient.organization.name:exact=Acme").to_query_string() == (
        "patient:Patient.organization:Organization.name:exact=Acme"
    )
    # subject on Encounter may be Patient or Group; only Patient has 'organization'
    resolved = q("Encounter", "subject.organization.name=Acme").criteria[0]
    assert isinstance(resolved, Chain)
    assert resolved.target_type == "Patient"


def test_reverse_chain_nested():
    has = q("Patient", "_has:Observation:patient:_has:AuditEvent:entity:agent=Practitioner/u1").criteria[0]
    assert isinstance(has, Has)
    assert (has.source_type, has.reference.code) == ("Observation", "patient")
    inner = has.criterion
    assert isinstance(inner, Has)
    assert (inner.source_type, inner.reference.code) == ("AuditEvent", "entity")
    assert isinstance(inner.criterion, Filter)
    assert inner.criterion.values == (ReferenceQuery("Practitioner", "u1"),)


def test_reverse_chain_with_modifier_and_or():
    has = q("Patient", "_has:Observation:patient:code:text=glucose,sugar").criteria[0]
    assert isinstance(has, Has)
    assert isinstance(has.criterion, Filter)
    assert has.criterion.modifier == "text"
    assert len(has.criterion.values) == 2


def test_chain_then_reverse_chain():
    chain = q("Observation", "patient._has:Group:member:_id=g1").criteria[0]
    assert isinstance(chain, Chain)
    assert chain.target_type == "Patient"
    assert isinstance(chain.criterion, Has)


# ---------------------------------------------------------------------------------------------
# Result parameters


def test_includes():
    query = q(
        "Observation",
        "_include=Observation:subject:Patient&_include:iterate=Patient:general-practitioner"
        "&_revinclude=Provenance:target&_include:recurse=Observation:has-member&_include=*",
    )
    registry = default_registry()
    assert query.includes == (
        Include("Observation", registry.get("Observation", "subject"), "Patient", False),
        Include("Patient", registry.get("Patient", "general-practitioner"), None, True),
        Include("Observation", registry.get("Observation", "has-member"), None, True),
        Include(None, None, None, False),
    )
    assert query.revincludes == (Include("Provenance", registry.get("Provenance", "target")),)
    assert q("Patient", "_revinclude=Observation:*").revincludes == (Include("Observation", None),)
    assert "_include:iterate=Patient:general-practitioner" in query.to_query_string()


def test_sort_count_total_summary_elements_contained():
    query = q(
        "Observation",
        "_sort=-date,code&_sort=_lastUpdated&_count=50&_total=accurate&_summary=count"
        "&_elements=status,code&_contained=both&_containedType=contained&_format=json&_pretty=true",
    )
    assert [(k.param.code, k.descending) for k in query.sort] == [
        ("date", True),
        ("code", False),
        ("_lastUpdated", False),
    ]
    assert (query.count, query.total, query.summary) == (50, "accurate", "count")
    assert query.elements == ("status", "code")
    assert (query.contained, query.contained_type) == ("both", "contained")
    assert query.to_query_string() == (
        "_sort=-date,code,_lastUpdated&_count=50&_total=accurate&_summary=count&_contained=both"
        "&_containedType=contained&_elements=status,code"
    )
    assert [(k.param.code, k.descending) for k in q("Patient", "_sort:desc=birthdate").sort] == [("birthdate", True)]


def test_system_search_with_type():
    query = q(None, "_type=Patient,Practitioner&name=smith&_lastUpdated=ge2020")
    assert query.resource_type is None
    assert query.types == ("Patient", "Practitioner")
    assert [c.param.code for c in query.criteria if isinstance(c, Filter)] == ["name", "_lastUpdated"]
    assert q(None, "_id=1").criteria[0].param.code == "_id"  # type: ignore[union-attr]
    with pytest.raises(BadRequest):
        q(None, "name=smith")  # without _type only the common parameters apply


def test_lenient_reports_and_leaves_out():
    query = q("Patient", "name=x&foo=bar&name:fuzzy=y&_sort=nope,birthdate&_query=q1&gender=", strict=False)
    assert [c.param.code for c in query.criteria if isinstance(c, Filter)] == ["name"]
    assert [i.expression for i in query.ignored] == [("foo",), ("name:fuzzy",), ("_sort",), ("_query",), ("gender",)]
    assert all(i.severity == "warning" for i in query.ignored)
    assert query.to_query_string() == "name=x&_sort=birthdate"


# ---------------------------------------------------------------------------------------------
# Errors: always 400, or 400 only when strict

ALWAYS_400 = [
    ("Patient", "birthdate=2013-13-45"),  # malformed date
    ("Patient", "birthdate=xx2013"),  # unknown prefix
    ("RiskAssessment", "probability=abc"),
    ("Observation", "value-quantity=5|mg"),
    ("Patient", "gender.name=x"),  # chain through a non-reference
    ("Observation", "subject.name=x"),  # ambiguous chain: Patient, Location...
    ("Observation", "subject:Medication.code=x"),  # not a target of subject
    ("Observation", "subject:Practitioner=1"),
    ("Patient", "_has:Observation:code:code=x"),  # code is not a reference
    ("Patient", "_has:Observation=x"),
    ("Patient", "_has:Nope:patient:code=x"),
    ("Patient", "identifier:of-type=a|b"),
    ("Patient", "name:missing=maybe"),
    ("Patient", "_count=-1"),
    ("Patient", "_count=ten"),
    ("Patient", "_total=all"),
    ("Patient", "_summary=yes"),
    ("Patient", "_elements=na me"),
    ("Patient", "_include=Patient:gender"),  # not a reference parameter
    ("Patient", "_include=Patient"),
    ("Observation", "code-value-quantity=http://loinc.org|1"),  # missing a component
    ("Observation", "subject=Patient/a b"),
    (None, "_type=Nope"),
    ("Nope", "name=x"),
]


@pytest.mark.parametrize(("resource_type", "query"), ALWAYS_400)
@pytest.mark.parametrize("strict", [True, False])
def test_malformed_is_always_400(resource_type, query, strict):
    with pytest.raises(BadRequest):
        q(resource_type, query, strict=strict)


STRICT_ONLY = [
    ("Patient", "foo=bar", "foo"),  # unknown parameter
    ("Patient", "name:fuzzy=x", "name:fuzzy"),  # unknown modifier
    ("Patient", "birthdate:exact=2013", "birthdate:exact"),  # modifier not for this type
    ("Patient", "name:iterate=x", "name:iterate"),
    ("Patient", "_query=named", "_query"),
    ("Patient", "_filter=name eq x", "_filter"),
    ("Patient", "_sort=nope", "_sort"),
    ("Patient", "_include=Observation:subject", "_include"),  # not a searched type, no :iterate
    ("Patient", "_revinclude=Observation:device", "_revinclude"),  # cannot refer to Patient
    ("Patient", "_include:deep=Patient:organization", "_include:deep"),
    ("Patient", "_type=Patient", "_type"),
    ("Observation", "subject:Patient.nope=x", "subject:Patient.nope"),
]


@pytest.mark.parametrize(("resource_type", "query", "name"), STRICT_ONLY)
def test_unknown_or_unsupported_strict_vs_lenient(resource_type, query, name):
    with pytest.raises(BadRequest) as raised:
        q(resource_type, query, strict=True)
    assert name.partition(":")[0].partition(".")[0] in raised.value.diagnostics
    lenient = q(resource_type, query, strict=False)
    assert lenient.criteria == ()
    assert lenient.includes == ()
    assert lenient.revincludes == ()
    assert lenient.sort == ()
    assert [i.expression for i in lenient.ignored] == [(name,)]


# ---------------------------------------------------------------------------------------------
# Property: random queries raise nothing but FhirError, and rendering is stable

_NAMES = st.sampled_from(
    [
        "name", "name:exact", "birthdate", "gender", "identifier", "identifier:of-type", "general-practitioner",
        "organization.name", "_has:Observation:patient:code", "_id", "_lastUpdated", "_sort", "_count",
        "_include", "_revinclude:iterate", "_summary", "_elements", "_total", "link:Patient.name", "address-city",
        "general-practitioner.name", "foo", "_has:Observation", "name:missing", "telecom:text", "_type", "",
    ]
)  # fmt: skip
_VALUES = st.text(alphabet=st.sampled_from(list("ab1209-:|$,\\/.TZ+ eqgtlsx*_")), max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_NAMES | st.text(max_size=12), _VALUES), max_size=5), st.booleans())
def test_random_queries_raise_only_fhir_errors(params, strict):
    try:
        parsed = parse("Patient", params, strict=strict)
    except FhirError:
        return
    again = parse("Patient", parse_qsl(parsed.to_query_string(), keep_blank_values=True), strict=True)
    assert again.criteria == parsed.criteria
    assert again.to_query_string() == parsed.to_query_string()


def test_a_search_holds_at_most_1000_values():
    """Counted over every parameter, before any is parsed; the refusal names the one that crossed."""
    assert len(parse("Patient", [("name", ",".join(["a"] * 999)), ("gender", "male")], strict=True).criteria) == 2
    with pytest.raises(BadRequest) as refused:
        parse("Patient", [("name", ",".join(["a"] * 600)), ("organization.name", ",".join(["b"] * 401))], strict=True)
    assert refused.value.issues[0].code == "too-costly"
    assert refused.value.issues[0].expression == ("organization.name",)
    escaped = ",".join(["a\\,b"] * 1000)  # escaped commas separate nothing
    assert len(parse("Patient", [("name", escaped)], strict=True).criteria[0].values) == 1000
