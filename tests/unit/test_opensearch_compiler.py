"""Golden tests of the OpenSearch backend: compiled search plans, the index mapping and an
index document, each compared with a committed JSON file under ``tests/search/golden/opensearch/``.

The golden files are the assertion, so each was read against search.html when written; they
are also *run* by ``test_opensearch_search.py`` on the fake OpenSearch. To regenerate them
after a deliberate change, run

    FHIRFLOW_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_opensearch_compiler.py

and review the diff (``git diff tests/search/golden``) before committing: a changed golden is a
changed query. A missing golden file fails unless ``FHIRFLOW_UPDATE_GOLDEN=1`` is set.

Every row of the shared conformance table (``tests/search/cases.py``) is compiled too, as the
search service on OpenSearch would compile it (the row's method, path, tenant, compartment,
``_count`` and handling, all recorded in the golden), and compared with
``tests/search/golden/opensearch/cases/<id>.json``; a golden without a row fails as well.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from fhirflow.adapters.opensearch.compiler import compile_query
from fhirflow.adapters.opensearch.documents import build_document
from fhirflow.adapters.opensearch.engine import OpenSearchSearchEngine
from fhirflow.adapters.opensearch.mappings import index_body
from fhirflow.adapters.opensearch.plan import CompileOptions
from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex
from fhirflow.errors import BadRequest, FhirError
from fhirflow.model import DEFAULT_TENANT
from fhirflow.query import parse
from fhirflow.query.ast import Query
from fhirflow.search_ports import SearchScope
from fhirflow.searchparams import index_document
from fhirflow_search.settings import SearchSettings
from fhirflow_search.usecase import SearchService
from tests.search.cases import CASES, Case
from tests.search.client import BASE_URL
from tests.search.fixtures import FixtureTerminology

GOLDEN = Path(__file__).resolve().parents[1] / "search" / "golden" / "opensearch"
CASE_GOLDEN = GOLDEN / "cases"
UPDATE = os.environ.get("FHIRFLOW_UPDATE_GOLDEN") == "1"
NOW = 1_718_000_000_000  # 2024-06-10T06:13:20Z: fixes the `ap` window on dates
BASE = "https://fhir.example.org/r4"
OPTIONS = CompileOptions(now=NOW, base_url=BASE)
LOINC = "http://loinc.org"
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")  # ap has its own rows (a different window)
# The conformance rows are compiled by the search service's own parts: its settings (page size)
# and admission, and the OpenSearch engine's compile options (production defaults, clock fixed).
SETTINGS = SearchSettings()
ENGINE = OpenSearchSearchEngine(OpenSearchSearchIndex(options=CompileOptions()), clock=lambda: NOW)
SERVICE = SearchService(ENGINE, SETTINGS)


@dataclass(frozen=True)
class Row:
    id: str
    resource_type: str | None
    query: str
    compartment: tuple[str, str] | None = None
    page_size: int = 20
    search_after: list[object] | None = None


ROWS = [
    # string (search.html#string)
    Row("string-default", "Patient", "name=Pet%C3%A9r"),
    Row("string-exact", "Patient", "name:exact=Pet%C3%A9r"),
    Row("string-contains", "Patient", "name:contains=et*r"),
    Row("string-missing", "Patient", "name:missing=true"),
    Row("string-or", "Patient", "family=smith,jones"),
    Row("string-and", "Patient", "given=anna&given=maria"),
    # token (search.html#token)
    Row("token-code", "Patient", "gender=female"),
    Row("token-system-code", "Observation", f"code={LOINC}|8480-6"),
    Row("token-no-system", "Patient", "identifier=|123"),
    Row("token-system-any-code", "Patient", "identifier=urn:mrn|"),
    Row("token-text", "Observation", "code:text=Systolic"),
    Row("token-not", "Patient", "gender:not=male,other"),
    Row("token-of-type", "Patient", "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|123"),
    Row("token-missing", "Patient", "gender:missing=false"),
    # date (search.html#date), every prefix: 1980-05-12 is [326937600000, 327023999999]
    *(Row(f"date-{p}", "Patient", f"birthdate={p}1980-05-12") for p in PREFIXES),
    Row("date-ap", "Patient", "birthdate=ap2020"),
    Row("date-month", "Observation", "date=2020-01"),
    Row("date-missing", "Patient", "birthdate:missing=true"),
    # number (search.html#number), every prefix: 100 is [99.5, 100.5)
    *(Row(f"number-{p}", "RiskAssessment", f"probability={p}100") for p in PREFIXES),
    Row("number-ap", "RiskAssessment", "probability=ap100"),
    Row("number-precision", "RiskAssessment", "probability=0.80"),
    # quantity (search.html#quantity)
    Row("quantity-value", "Observation", "value-quantity=5.4"),
    Row("quantity-system-code", "Observation", "value-quantity=gt5.4|http://unitsofmeasure.org|mg"),
    Row("quantity-code-or-unit", "Observation", "value-quantity=le5.4||mg"),
    Row("quantity-ap", "Observation", "value-quantity=ap5.4"),
    # composite (search.html#composite)
    Row("composite", "Observation", f"component-code-value-quantity={LOINC}|8480-6$gt130"),
    # reference (search.html#reference)
    Row("reference-type-id", "Observation", "subject=Patient/123"),
    Row("reference-id", "Observation", "subject=123"),
    Row("reference-type-modifier", "Observation", "subject:Patient=123"),
    Row("reference-version", "Observation", "subject=Patient/123/_history/2"),
    Row("reference-absolute-local", "Observation", f"subject={BASE}/Patient/123"),
    Row("reference-absolute-foreign", "Observation", "subject=http://other.org/fhir/Patient/123"),
    Row("reference-canonical", "CarePlan", "instantiates-canonical=http://example.org/PlanDefinition/p1|2"),
    Row("reference-identifier", "Observation", "subject:identifier=urn:mrn|123"),
    Row("reference-missing", "Observation", "subject:missing=true"),
    # uri (search.html#uri)
    Row("uri-exact", "ValueSet", "url=http://acme.org/fhir/ValueSet/123"),
    Row("uri-below", "ValueSet", "url:below=http://acme.org/fhir/"),
    Row("uri-above", "ValueSet", "url:above=http://acme.org/fhir/ValueSet/123/_history/5"),
    Row("uri-missing", "ValueSet", "url:missing=true"),
    # special
    Row("near", "Location", "near=42.2565|-83.6948|11.2|km"),
    # parameters for all resources (search.html#all)
    Row("common-id", "Patient", "_id=p1,p2"),
    Row("common-id-not", "Patient", "_id:not=p1"),
    Row("common-lastupdated", "Patient", "_lastUpdated=ge2024-01-01T00:00:00Z"),
    Row("common-tag", "Patient", "_tag=urn:tags|vip"),
    Row("common-profile", "Patient", "_profile=http://example.org/StructureDefinition/p"),
    Row("common-security", "Patient", "_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R"),
    Row("common-source", "Patient", "_source=http://example.org/source"),
    Row("common-text", "Patient", "_text=springfield"),
    Row("common-content", "Patient", "_content:exact=acme health,beta"),
    # chains and reverse chains (search.html#chaining, #has)
    Row("chain", "Observation", "subject:Patient.name=peter"),
    Row("chain-nested", "Observation", "subject:Patient.organization.name=acme"),
    Row("chain-inferred-type", "Patient", "organization.name=acme"),
    Row("has", "Patient", f"_has:Observation:patient:code={LOINC}|8480-6"),
    Row("has-nested", "Patient", "_has:Observation:patient:_has:AuditEvent:entity:agent=Practitioner/dr"),
    Row("has-and-chain", "Patient", "_has:Observation:patient:subject:Patient.name=x&organization.name=acme"),
    # includes (search.html#include)
    Row("include", "Observation", "_include=Observation:subject"),
    Row("include-target-type", "Observation", "_include=Observation:subject:Patient"),
    Row("include-wildcard", "Observation", "_include=*"),
    Row("include-iterate", "Observation", "_include=Observation:subject&_include:iterate=Patient:organization"),
    Row("revinclude", "Patient", "_revinclude=Provenance:target"),
    Row("revinclude-iterate", "Patient", "_revinclude=Observation:subject&_revinclude:iterate=Provenance:target"),
    # sort, paging, totals, summary (search.html#sort, #count, #total, #summary)
    Row("sort-string", "Patient", "_sort=family"),
    Row("sort-date-desc", "Patient", "_sort=-birthdate"),
    Row("sort-several", "Observation", "_sort=code,-date,value-quantity,_lastUpdated"),
    Row("sort-id-desc", "Patient", "_sort=-_id"),
    Row("sort-text-relevance", "Patient", "_text=springfield"),
    Row("page-after", "Patient", "_sort=-birthdate", page_size=10, search_after=[327023999999, "Patient/p1"]),
    Row("total-none", "Patient", "_total=none"),
    Row("total-estimate", "Patient", "_total=estimate"),
    Row("total-accurate", "Patient", "_total=accurate"),
    Row("summary-count", "Observation", "code=8480-6&_summary=count&_include=Observation:subject"),
    Row("count-zero", "Patient", "name=x", page_size=0),
    # compartments and system search (http.html#search)
    Row("compartment", "Observation", "code=8480-6", compartment=("Patient", "123")),
    Row("system", None, "_lastUpdated=gt2024-01-01"),
    Row("system-types", None, "_type=Patient,Practitioner&name=smith"),
]


def request_line(row: Row) -> str:
    return f"GET {row.resource_type or ''}?{row.query}" if row.resource_type else f"GET ?{row.query}"


def compiled(row: Row) -> dict[str, Any]:
    query = parse(row.resource_type, parse_qsl(row.query, keep_blank_values=True), strict=True)
    plan = compile_query(
        query,
        tenant="t1",
        compartment=row.compartment,
        page_size=row.page_size,
        search_after=row.search_after,
        options=OPTIONS,
    )
    return {
        "request": request_line(row),
        "compartment": "/".join(row.compartment) if row.compartment else None,
        "searchAfter": row.search_after,
        "plan": plan.to_json(),
    }


def check_golden(path: Path, actual: dict[str, Any]) -> None:
    text = json.dumps(actual, indent=2, ensure_ascii=False) + "\n"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run with FHIRFLOW_UPDATE_GOLDEN=1 and review it"
    assert json.loads(path.read_text(encoding="utf-8")) == actual, f"{path.name} differs from the compiled plan"


def test_row_ids_are_unique() -> None:
    assert len({row.id for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_compiled_plan_matches_golden(row: Row) -> None:
    check_golden(GOLDEN / f"{row.id}.json", compiled(row))


def test_index_mapping_matches_golden() -> None:
    check_golden(GOLDEN / "mapping.json", index_body(shards=3, replicas=1))


DOCUMENT_RESOURCE: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "obs1",
    "meta": {"versionId": "3", "lastUpdated": "2024-01-01T12:00:00Z", "tag": [{"system": "urn:tags", "code": "vip"}]},
    "text": {"status": "generated", "div": "<div xmlns='http://www.w3.org/1999/xhtml'>BP 120/80</div>"},
    "status": "final",
    "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure"}], "text": "BP"},
    "subject": {"reference": "Patient/p1"},
    "performer": [{"reference": f"{BASE}/Practitioner/dr"}, {"reference": "http://other.org/Practitioner/x"}],
    "effectivePeriod": {"start": "2020-01-15", "end": "2020-01-16T10:00:00Z"},
    "component": [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": {"value": 120, "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": {"value": 80, "comparator": "<"}},
    ],
}


def test_index_document_matches_golden() -> None:
    doc = index_document(DOCUMENT_RESOURCE, base_url=BASE)
    body = build_document(
        doc, tenant="t1", version=3, last_updated=1704110400000, resource=DOCUMENT_RESOURCE, base_url=BASE
    )
    check_golden(GOLDEN / "document-observation.json", body)


# ---------------------------------------------------------------------------------------------
# What the backend refuses: a 400 naming the parameter, never a silently wrong answer


@pytest.mark.parametrize(
    ("resource_type", "query", "parameter"),
    [
        ("Observation", f"code:above={LOINC}|8480-6", "code:above"),
        ("Observation", f"code:below={LOINC}|8480-6", "code:below"),
        ("Observation", "code:in=http://hl7.org/fhir/ValueSet/observation-codes", "code:in"),
        ("Observation", "code:not-in=http://hl7.org/fhir/ValueSet/observation-codes", "code:not-in"),
        ("Patient", "_list=$current-problems", "_list"),  # a functional list (List/l1 is searchable)
        ("Patient", "_contained=true", "_contained"),
        ("Observation", "_sort=component-code-value-quantity", "_sort"),
        ("Location", "near=1|2|3|furlong", "near"),
    ],
)
def test_refused(resource_type: str, query: str, parameter: str) -> None:
    parsed = parse(resource_type, parse_qsl(query), strict=True)
    with pytest.raises(BadRequest) as raised:
        compile_query(parsed, tenant="t1", page_size=10, search_after=None, options=OPTIONS)
    assert raised.value.issues[0].expression == (parameter,)


def test_every_request_carries_the_tenant() -> None:
    for row in ROWS:
        plan = compiled(row)["plan"]
        bodies = [plan["body"]] + [s["body"] for s in plan.get("lookups", []) + plan.get("includes", [])]
        for body in bodies:
            assert body["query"]["bool"]["filter"][0] == {"term": {"tenant": "t1"}}, row.id


# ---------------------------------------------------------------------------------------------
# The shared conformance table (tests/search/cases.py): each row compiled as the search service
# on OpenSearch would compile it (services/search/fhirflow_search/usecase.py, engine.py)


def case_inputs(case: Case) -> dict[str, Any]:
    """What the service compiles a row with, besides its query: the tenant and base URL of the
    row's path (as tests/search/client.py sends it), its compartment, and the handling."""
    base = BASE_URL + (f"/tenant/{case.tenant}" if case.tenant else "")
    return {
        "tenant": case.tenant or DEFAULT_TENANT,
        "baseUrl": base,
        "compartment": "/".join(case.compartment) if case.compartment else None,
        "handling": "strict" if case.strict else "lenient",
    }


def compiled_case(case: Case) -> dict[str, Any]:
    """The row's plan (or error) as ``SearchService.plan`` and ``OpenSearchSearchEngine`` make it:
    parsed strict or lenient, admitted (lenient: what OpenSearch cannot do is left out and listed
    under ``ignored``), one page of ``_count`` (default and cap from SearchSettings), in the row's
    tenant and compartment, with the engine's compile options. POST only carries the query."""
    inputs = case_inputs(case)
    actual: dict[str, Any] = {"request": case.request_line()}
    if case.method == "POST":
        actual["form"] = case.query
    actual.update(inputs)
    try:
        query = parse(case.resource_type, _params(case.query), strict=case.strict)
        query = admitted(query, strict=case.strict)
        count = SETTINGS.default_count if query.count is None else min(query.count, SETTINGS.max_count)
        types = (case.resource_type,) if case.resource_type else query.types
        scope = SearchScope(inputs["tenant"], inputs["baseUrl"], types, case.compartment)
        plan = compile_query(
            query,
            tenant=scope.tenant,
            compartment=scope.compartment,
            page_size=count,
            search_after=None,
            options=ENGINE.options(scope),
        )
    except FhirError as error:
        actual["error"] = {"status": error.status, "issues": [issue.to_json() for issue in error.issues]}
        return actual
    if query.ignored:
        actual["ignored"] = [issue.to_json() for issue in query.ignored]
    actual["plan"] = plan.to_json()
    return actual


def admitted(query: Query, *, strict: bool) -> Query:
    """``SearchService.admit`` with the OpenSearch engine: a 400 (strict) or the query without what
    the engine cannot do (lenient), with token terminology modifiers expanded from the fixture's
    ValueSets and CodeSystems: the query the backend runs."""
    result = SERVICE.admit(query, strict=strict, terminology=FixtureTerminology())
    return result.expanded or result.query


def _params(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def test_case_ids_are_unique() -> None:
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_conformance_case_matches_golden(case: Case) -> None:
    """Each case's plan, or the error this backend answers it with; a missing golden fails."""
    check_golden(CASE_GOLDEN / f"{case.id}.json", compiled_case(case))


def test_every_case_golden_belongs_to_a_row() -> None:
    """No golden outlives its row (a renamed or removed row leaves a stale file behind)."""
    stale = sorted(path.name for path in CASE_GOLDEN.glob("*.json") if path.stem not in {c.id for c in CASES})
    assert not stale, f"golden files without a row in tests/search/cases.py: {stale}"


def test_case_plans_carry_the_tenant_the_compartment_and_the_page_size() -> None:
    """Every request of a row's plan is filtered to the row's tenant (and compartment), and the
    page is the row's ``_count`` or the service's default."""
    for case in CASES:
        out = compiled_case(case)
        if "plan" not in out:
            continue
        plan = out["plan"]
        bodies = [plan["body"]] + [s["body"] for s in plan.get("lookups", []) + plan.get("includes", [])]
        for body in bodies:
            assert body["query"]["bool"]["filter"][0] == {"term": {"tenant": out["tenant"]}}, case.id
        if case.compartment is not None:
            member = {"term": {"compartments": "/".join(case.compartment)}}
            assert member in plan["body"]["query"]["bool"]["filter"], case.id
        counts = [int(v) for k, v in _params(case.query) if k == "_count"]
        expected = 0 if plan["countOnly"] else (counts[-1] if counts else SETTINGS.default_count)
        assert plan["pageSize"] == expected, case.id
