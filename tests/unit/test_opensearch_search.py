"""``OpenSearchSearchIndex`` end to end on the fake OpenSearch (``test_opensearch_fake.py``):
resources are indexed through the adapter (documents.py), queries are parsed, compiled and
run (lookups, page, includes), and the ids that come back are checked against the spec.

This is what proves the golden plans *mean* the right thing: the same compiler output, run
over documents built from real resources. The fake models the DSL subset the compiler uses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest

from fhirflow.adapters.opensearch.plan import CompileOptions
from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex, SearchResult
from fhirflow.errors import BadRequest
from fhirflow.ports import SearchIndex
from fhirflow.query import parse
from tests.unit.test_opensearch_fake import FakeOpenSearch

NOW = 1_718_000_000_000  # 2024-06-10: fixes the `ap` window on dates
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
PROFILE = "http://example.org/fhir/StructureDefinition/p"
XHTML = "http://www.w3.org/1999/xhtml"


def meta(**extra: Any) -> dict[str, Any]:
    return {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z", **extra}


def quantity(value: float, code: str = "mm[Hg]") -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def concept(*codings: tuple[str, str], display: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": s, "code": c} for s, c in codings]}
    if display:
        out["text"] = display
    return out


RESOURCES: list[dict[str, Any]] = [
    {
        "resourceType": "Patient",
        "id": "p1",
        "meta": meta(tag=[{"system": "urn:tags", "code": "vip"}], profile=[PROFILE]),
        "text": {"status": "generated", "div": f"<div xmlns='{XHTML}'>Anna lives in Springfield</div>"},
        "identifier": [
            {"system": "urn:mrn", "value": "123", "type": {"coding": [{"system": V2_0203, "code": "MR"}]}},
            {"system": "urn:ssn", "value": "999"},
        ],
        "name": [{"family": "Petér", "given": ["Anna"]}],
        "gender": "female",
        "birthDate": "1980-05-12",
        "managingOrganization": {"reference": "Organization/o1"},
    },
    {
        "resourceType": "Patient",
        "id": "p2",
        "meta": meta(),
        "name": [{"family": "Peterson", "given": ["Bob"]}],
        "gender": "male",
        "birthDate": "1990",
        "managingOrganization": {"reference": "Organization/o2"},
    },
    {"resourceType": "Patient", "id": "p3", "meta": meta(), "name": [{"family": "Zed"}]},
    {"resourceType": "Organization", "id": "o1", "meta": meta(), "name": "Acme Health"},
    {"resourceType": "Organization", "id": "o2", "meta": meta(), "name": "Beta Clinic"},
    {
        "resourceType": "Observation",
        "id": "obs1",
        "meta": meta(),
        "status": "final",
        "code": concept((LOINC, "8480-6"), display="Systolic blood pressure"),
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2020-01-15T10:00:00Z",
        "valueQuantity": quantity(120),
    },
    {
        "resourceType": "Observation",
        "id": "obs2",
        "meta": meta(),
        "status": "final",
        "code": concept((LOINC, "8462-4"), ("http://other.org", "8480-6")),
        "subject": {"reference": "Patient/p2"},
        "effectivePeriod": {"start": "2020-01-01", "end": "2020-02-01"},
        "valueQuantity": quantity(80),
    },
    {
        "resourceType": "Observation",
        "id": "obs3",
        "meta": meta(),
        "status": "final",
        "code": concept((LOINC, "85354-9")),
        "subject": {"reference": "Patient/p1"},
        "component": [
            {"code": concept((LOINC, "8480-6")), "valueQuantity": quantity(130)},
            {"code": concept((LOINC, "8462-4")), "valueQuantity": quantity(85)},
        ],
    },
    {
        "resourceType": "RiskAssessment",
        "id": "ra1",
        "meta": meta(),
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "prediction": [{"probabilityDecimal": 0.8}],
    },
    {
        "resourceType": "RiskAssessment",
        "id": "ra2",
        "meta": meta(),
        "status": "final",
        "subject": {"reference": "Patient/p2"},
        "prediction": [{"probabilityRange": {"low": {"value": 0.2}, "high": {"value": 0.4}}}],
    },
    {
        "resourceType": "ValueSet",
        "id": "vs1",
        "meta": meta(),
        "status": "active",
        "url": "http://acme.org/fhir/ValueSet/123",
    },
    {
        "resourceType": "Location",
        "id": "loc1",
        "meta": meta(),
        "position": {"latitude": 42.2565, "longitude": -83.6948},
    },
    {
        "resourceType": "Provenance",
        "id": "prov1",
        "meta": meta(),
        "target": [{"reference": "Patient/p1"}],
        "recorded": "2024-01-01T00:00:00Z",
        "agent": [{"who": {"reference": "Organization/o1"}}],
    },
]


def make_index(options: CompileOptions | None = None) -> OpenSearchSearchIndex:
    index = OpenSearchSearchIndex(client=FakeOpenSearch(), options=options or CompileOptions(now=NOW))
    for version, resource in enumerate(RESOURCES, start=1):
        assert index.apply("t1", resource["resourceType"], resource["id"], 1, version, resource)
    # another tenant's copy of p1 must never show up
    other = dict(RESOURCES[0], name=[{"family": "Peter"}])
    index.apply("t2", "Patient", "p1", 1, 1, other)
    return index


@pytest.fixture(scope="module")
def index() -> OpenSearchSearchIndex:
    return make_index()


def search(
    index: OpenSearchSearchIndex,
    resource_type: str | None,
    query: str,
    *,
    page_size: int = 50,
    compartment: tuple[str, str] | None = None,
    cursor: list[object] | None = None,
) -> SearchResult:
    parsed = parse(resource_type, parse_qsl(query, keep_blank_values=True), strict=True)
    return index.search(parsed, tenant="t1", compartment=compartment, page_size=page_size, cursor=cursor)


def ids(result: SearchResult) -> list[str]:
    return [hit.id for hit in result.matches]


# (resource type, query, expected ids as a set) — one row per type, prefix and modifier
ROWS = [
    # string (search.html#string): starts-with, case- and accent-insensitive
    ("Patient", "name=pet", {"p1", "p2"}),
    ("Patient", "name=PETE", {"p1", "p2"}),
    ("Patient", "family=peter", {"p1", "p2"}),
    ("Patient", "name:exact=Petér", {"p1"}),
    ("Patient", "name:exact=peter", set()),
    ("Patient", "name:contains=ters", {"p2"}),
    ("Patient", "name=zed,anna", {"p1", "p3"}),
    ("Patient", "name=pet&name=bob", {"p2"}),
    # token (search.html#token)
    ("Patient", "gender=female", {"p1"}),
    ("Patient", "gender:not=male", {"p1", "p3"}),
    ("Patient", "gender:missing=true", {"p3"}),
    ("Patient", "identifier=urn:mrn|123", {"p1"}),
    ("Patient", "identifier=urn:mrn|999", set()),  # system and value of one identifier
    ("Patient", "identifier=|123", set()),
    ("Patient", "identifier=urn:ssn|", {"p1"}),
    ("Patient", f"identifier:of-type={V2_0203}|MR|123", {"p1"}),
    ("Patient", f"identifier:of-type={V2_0203}|MR|999", set()),
    ("Observation", f"code={LOINC}|8480-6", {"obs1"}),  # not obs2: 8480-6 there is in another system
    ("Observation", "code=8480-6", {"obs1", "obs2"}),
    ("Observation", "code:text=systolic", {"obs1"}),
    ("Patient", "_id=p1,p3", {"p1", "p3"}),
    ("Patient", "_id:not=p1", {"p2", "p3"}),
    ("Observation", "component-code-value-quantity:missing=false", {"obs3"}),
    ("Patient", "_tag=urn:tags|vip", {"p1"}),
    ("Patient", "_profile=http://example.org/fhir/StructureDefinition/p", {"p1"}),
    # date (search.html#date): ranges on both sides
    ("Patient", "birthdate=1980", {"p1"}),
    ("Patient", "birthdate=1980-05", {"p1"}),
    ("Patient", "birthdate=1990-06", set()),  # 1990 is not inside June 1990
    ("Patient", "birthdate=ne1980", {"p2"}),
    ("Patient", "birthdate=gt1990-06", {"p2"}),  # the rest of 1990 is after June
    ("Patient", "birthdate=ge1980-05-12", {"p1", "p2"}),
    ("Patient", "birthdate=lt1985", {"p1"}),
    ("Patient", "birthdate=le1980-05-12", {"p1"}),
    ("Patient", "birthdate=sa1985", {"p2"}),
    ("Patient", "birthdate=eb1985", {"p1"}),
    ("Patient", "birthdate=sa1990-06", set()),  # 1990 starts before the end of June 1990
    ("Patient", "birthdate=ap1980-06-01", {"p1"}),
    ("Observation", "date=2020-01-15", {"obs1"}),
    ("Observation", "date=2020-01", {"obs1"}),  # obs2's period runs into February
    ("Observation", "date=ge2020-01-20", {"obs2"}),
    ("Observation", "date=le2020-01-15", {"obs1", "obs2"}),
    ("Observation", "date=gt2020-01-15", {"obs2"}),  # obs1 lies inside the day, obs2 runs past it
    ("Observation", "date=lt2020-01-15", {"obs2"}),
    ("Observation", "date=sa2020-01-15", set()),
    ("Observation", "date=sa2020-01-14", {"obs1"}),
    ("Observation", "date=eb2020-02-01", {"obs1"}),
    ("Observation", "date=eb2020-02-02", {"obs1", "obs2"}),
    ("Patient", "_lastUpdated=2024-01-01", {"p1", "p2", "p3"}),
    # number (search.html#number): precision of the search value; Ranges as intervals
    ("RiskAssessment", "probability=0.8", {"ra1"}),
    ("RiskAssessment", "probability=0.80", {"ra1"}),
    ("RiskAssessment", "probability=gt0.3", {"ra1", "ra2"}),
    ("RiskAssessment", "probability=lt0.3", {"ra2"}),
    ("RiskAssessment", "probability=ge0.4", {"ra1", "ra2"}),
    ("RiskAssessment", "probability=le0.2", {"ra2"}),
    ("RiskAssessment", "probability=gt0.8", set()),
    ("RiskAssessment", "probability=eq0.3", set()),
    ("RiskAssessment", "probability=ne0.8", {"ra2"}),
    ("RiskAssessment", "probability=sa0.5", {"ra1"}),
    ("RiskAssessment", "probability=eb0.5", {"ra2"}),
    ("RiskAssessment", "probability=ap0.75", {"ra1"}),
    # quantity (search.html#quantity)
    ("Observation", "value-quantity=120", {"obs1"}),
    ("Observation", "value-quantity=gt100", {"obs1"}),
    ("Observation", f"value-quantity=lt100|{UCUM}|mm[Hg]", {"obs2"}),
    ("Observation", "value-quantity=80||mm[Hg]", {"obs2"}),
    ("Observation", f"value-quantity=80|{UCUM}|kg", set()),
    ("Observation", "value-quantity=ap110", {"obs1"}),
    # composite (search.html#composite): components of one value
    ("Observation", f"component-code-value-quantity={LOINC}|8480-6$130", {"obs3"}),
    ("Observation", f"component-code-value-quantity={LOINC}|8480-6$85", set()),
    ("Observation", f"component-code-value-quantity={LOINC}|8462-4$gt80", {"obs3"}),
    # reference (search.html#reference)
    ("Observation", "subject=Patient/p1", {"obs1", "obs3"}),
    ("Observation", "subject:Patient=p2", {"obs2"}),
    ("Observation", "subject=p2", {"obs2"}),
    ("Observation", "patient:missing=false", {"obs1", "obs2", "obs3"}),
    # uri (search.html#uri)
    ("ValueSet", "url=http://acme.org/fhir/ValueSet/123", {"vs1"}),
    ("ValueSet", "url:below=http://acme.org/fhir", {"vs1"}),
    ("ValueSet", "url:above=http://acme.org/fhir/ValueSet/123/_history/2", {"vs1"}),
    ("ValueSet", "url:above=http://acme.org/fhir", set()),
    # special: near
    ("Location", "near=42.25|-83.69|5|km", {"loc1"}),
    ("Location", "near=40.0|-80.0|5|km", set()),
    # _text / _content
    ("Patient", "_text=springfield", {"p1"}),
    ("Organization", "_content=acme", {"o1"}),
    # chains and reverse chains
    ("Patient", "organization.name=acme", {"p1"}),
    ("Observation", "subject:Patient.organization.name=beta", {"obs2"}),
    ("Patient", f"_has:Observation:subject:code={LOINC}|8480-6", {"p1"}),
    ("Patient", "_has:Observation:subject:_has:Provenance:target:agent=Organization/o1", set()),
    ("Patient", "_has:Provenance:target:agent=Organization/o1", {"p1"}),
]


@pytest.mark.parametrize(("resource_type", "query", "expected"), ROWS, ids=[f"{r[0]}?{r[1]}" for r in ROWS])
def test_search_matches(index: OpenSearchSearchIndex, resource_type: str, query: str, expected: set[str]) -> None:
    assert set(ids(search(index, resource_type, query))) == expected


def test_sort_orders_and_puts_missing_values_last(index: OpenSearchSearchIndex) -> None:
    assert ids(search(index, "Patient", "_sort=birthdate")) == ["p1", "p2", "p3"]
    assert ids(search(index, "Patient", "_sort=-birthdate")) == ["p2", "p1", "p3"]
    assert ids(search(index, "Patient", "_sort=family")) == ["p1", "p2", "p3"]
    assert ids(search(index, "Patient", "_sort=-_id")) == ["p3", "p2", "p1"]


def test_paging_with_search_after_visits_every_match_once(index: OpenSearchSearchIndex) -> None:
    seen: list[str] = []
    cursor: list[object] | None = None
    while True:
        page = search(index, "Patient", "_sort=-birthdate", page_size=1, cursor=cursor)
        seen += ids(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["p2", "p1", "p3"]


def test_totals(index: OpenSearchSearchIndex) -> None:
    assert search(index, "Patient", "_total=accurate").total == 3
    assert search(index, "Patient", "_total=none").total is None
    counted = search(index, "Patient", "_summary=count")
    assert (counted.matches, counted.total) == ([], 3)


def test_compartment_and_system_search(index: OpenSearchSearchIndex) -> None:
    assert set(ids(search(index, "Observation", "", compartment=("Patient", "p1")))) == {"obs1", "obs3"}
    assert set(ids(search(index, None, "_type=Patient,Organization&_id=p1,o1,obs1"))) == {"p1", "o1"}
    assert set(ids(search(index, None, "_id=obs1,p2"))) == {"obs1", "p2"}


def test_include_revinclude_and_iterate(index: OpenSearchSearchIndex) -> None:
    result = search(index, "Observation", "_id=obs1&_include=Observation:subject")
    assert (ids(result), [h.id for h in result.includes]) == (["obs1"], ["p1"])
    result = search(index, "Observation", "_id=obs1&_include=Observation:subject&_include:iterate=Patient:organization")
    assert [h.key for h in result.includes] == ["Patient/p1", "Organization/o1"]
    result = search(index, "Patient", "_id=p1&_revinclude=Observation:subject")
    assert {h.id for h in result.includes} == {"obs1", "obs3"}
    result = search(index, "Patient", "_id=p1&_revinclude=Observation:subject&_revinclude:iterate=Provenance:target")
    assert {h.id for h in result.includes} == {"obs1", "obs3", "prov1"}
    query = "_id=o1&_revinclude=Patient:organization&_revinclude:iterate=Observation:subject"
    result = search(index, "Organization", query)
    assert {h.id for h in result.includes} == {"p1", "obs1", "obs3"}


def test_includes_stop_at_the_limit() -> None:
    index = make_index(CompileOptions(now=NOW, include_limit=1))
    result = search(index, "Patient", "_id=p1&_revinclude=Observation:subject")
    assert len(result.includes) == 1
    assert result.includes_truncated


def test_a_chain_beyond_the_lookup_limit_is_too_costly() -> None:
    index = make_index(CompileOptions(now=NOW, lookup_limit=1))
    assert set(ids(search(index, "Patient", "organization.name=acme"))) == {"p1"}
    with pytest.raises(BadRequest) as raised:
        search(index, "Observation", "subject:Patient.name=pet")
    [issue] = raised.value.issues
    assert (issue.code, issue.expression) == ("too-costly", ("subject:Patient.name",))


def test_matches_carry_the_indexed_resource(index: OpenSearchSearchIndex) -> None:
    [hit] = search(index, "Patient", "_id=p1").matches
    assert (hit.key, hit.version, hit.resource) == ("Patient/p1", 1, RESOURCES[0])


def test_versions_only_move_forward_and_deletions_are_tombstones() -> None:
    index: SearchIndex = OpenSearchSearchIndex(client=FakeOpenSearch(), options=CompileOptions(now=NOW))
    patient = RESOURCES[0]
    assert index.indexed_version("t1", "Patient", "p1") is None
    assert index.apply("t1", "Patient", "p1", 2, 2, patient)
    assert not index.apply("t1", "Patient", "p1", 2, 2, patient)
    assert not index.apply("t1", "Patient", "p1", 1, 1, patient)
    assert index.apply("t1", "Patient", "p1", 3, 3, None)
    assert index.indexed_version("t1", "Patient", "p1") == 3
    assert not index.apply("t1", "Patient", "p1", 2, 2, patient)
    assert isinstance(index, OpenSearchSearchIndex)
    assert ids(search(index, "Patient", "")) == []
    assert index.apply("t1", "Patient", "p1", 4, 4, patient)
    assert ids(search(index, "Patient", "")) == ["p1"]
    assert index.indexed_version("t2", "Patient", "p1") is None


def test_the_client_is_built_lazily_and_creates_the_index() -> None:
    built: list[FakeOpenSearch] = []

    def factory() -> FakeOpenSearch:
        built.append(FakeOpenSearch())
        return built[-1]

    index = OpenSearchSearchIndex(client_factory=factory, index="resources")
    assert built == []
    index.create_index(shards=1, replicas=0)
    assert list(built[0].created) == ["resources"]
    assert built[0].created["resources"]["settings"]["number_of_shards"] == 1
