"""Token :in, :not-in, :above and :below answered from the ValueSets and CodeSystems this server
holds (fhirflow.query.terminology), through the search service and the SQLite backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from fhirflow.query.ast import Filter, TokenQuery
from fhirflow.query.parser import parse
from fhirflow.query.terminology import MAX_CODES, NeedsTerminology, expand
from fhirflow.runtime import build_dependencies
from fhirflow.settings import Settings
from tests.unit.test_authz_kit import InProcessClient

SYS = "http://example.org/fhir/CodeSystem/shapes"
OTHER = "http://example.org/fhir/CodeSystem/colours"

SHAPES = {
    "resourceType": "CodeSystem",
    "url": SYS,
    "status": "active",
    "content": "complete",
    "hierarchyMeaning": "is-a",
    "concept": [
        {
            "code": "shape",
            "concept": [
                {"code": "polygon", "concept": [{"code": "triangle"}, {"code": "square"}]},
                {"code": "round", "concept": [{"code": "circle"}]},
            ],
        }
    ],
}
POLYGONS = {
    "resourceType": "ValueSet",
    "url": "http://example.org/fhir/ValueSet/polygons",
    "version": "1",
    "status": "active",
    "compose": {"include": [{"system": SYS, "concept": [{"code": "triangle"}, {"code": "square"}]}]},
}
EXPANDED = {
    "resourceType": "ValueSet",
    "url": "http://example.org/fhir/ValueSet/round-things",
    "status": "active",
    "expansion": {
        "timestamp": "2024-01-01T00:00:00Z",
        "contains": [
            {"abstract": True, "code": "round", "system": SYS, "contains": [{"system": SYS, "code": "circle"}]}
        ],
    },
}
ALL_COLOURS_BUT_RED = {
    "resourceType": "ValueSet",
    "url": "http://example.org/fhir/ValueSet/not-red",
    "status": "active",
    "compose": {
        "include": [{"valueSet": ["http://example.org/fhir/ValueSet/polygons"]}, {"system": OTHER}],
        "exclude": [{"system": SYS, "concept": [{"code": "square"}]}],
    },
}
BY_FILTER = {
    "resourceType": "ValueSet",
    "url": "http://example.org/fhir/ValueSet/by-filter",
    "status": "active",
    "compose": {"include": [{"system": SYS, "filter": [{"property": "concept", "op": "is-a", "value": "polygon"}]}]},
}


def observation(id_: str, system: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id_,
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
    }


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> InProcessClient:
    client = InProcessClient(build_dependencies(Settings(data_dir=tmp_path_factory.mktemp("terminology"), audit="off")))
    for resource in (SHAPES, POLYGONS, EXPANDED, ALL_COLOURS_BUT_RED, BY_FILTER):
        assert client.request("POST", f"/{resource['resourceType']}", body=resource).status == 201
    for id_, system, code in [
        ("tri", SYS, "triangle"),
        ("sq", SYS, "square"),
        ("circ", SYS, "circle"),
        ("poly", SYS, "polygon"),
        ("blue", OTHER, "blue"),
        ("elsewhere", "http://elsewhere.org", "triangle"),
    ]:
        assert client.request("PUT", f"/Observation/{id_}", body=observation(id_, system, code)).status in (200, 201)
    return client


def get(api: InProcessClient, url: str, **headers: str) -> Any:
    """GET ``path?query`` (the query as a client writes it, unencoded here)."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    return api.request("GET", parts.path, query=dict(parse_qsl(parts.query)), headers=headers)


def found(api: InProcessClient, query: str, **headers: str) -> list[str]:
    reply = get(api, f"/Observation?{query.replace('+', '%2B')}", **headers)
    assert reply.status == 200, reply.body
    return sorted(e["resource"]["id"] for e in reply.body.get("entry", []) if e["search"]["mode"] == "match")


def outcome(api: InProcessClient, query: str, **headers: str) -> tuple[int, list[str], str]:
    reply = get(api, f"/Observation?{query}", **headers)
    issues = reply.body.get("issue", []) if reply.body.get("resourceType") == "OperationOutcome" else []
    return reply.status, [x for i in issues for x in i.get("expression", [])], str(reply.body)


def test_in_takes_a_value_set_by_url_version_or_id(api: InProcessClient) -> None:
    assert found(api, "code:in=http://example.org/fhir/ValueSet/polygons") == ["sq", "tri"]
    assert found(api, "code:in=http://example.org/fhir/ValueSet/polygons|1") == ["sq", "tri"]
    vs_id = get(api, "/ValueSet?url=http://example.org/fhir/ValueSet/polygons").body["entry"][0]["resource"]["id"]
    assert found(api, f"code:in=ValueSet/{vs_id}") == ["sq", "tri"]
    assert found(api, "code:in=http://example.org/fhir/ValueSet/round-things") == ["circ"]  # from the expansion


def test_in_follows_included_value_sets_whole_systems_and_exclusions(api: InProcessClient) -> None:
    assert found(api, "code:in=http://example.org/fhir/ValueSet/not-red") == ["blue", "tri"]


def test_not_in_is_every_resource_without_a_coding_in_the_set(api: InProcessClient) -> None:
    assert found(api, "code:not-in=http://example.org/fhir/ValueSet/polygons") == ["blue", "circ", "elsewhere", "poly"]


def test_below_and_above_walk_the_code_systems_hierarchy(api: InProcessClient) -> None:
    assert found(api, f"code:below={SYS}|polygon") == ["poly", "sq", "tri"]
    assert found(api, f"code:below={SYS}|shape") == ["circ", "poly", "sq", "tri"]
    assert found(api, f"code:above={SYS}|triangle") == ["poly", "tri"]
    assert found(api, f"code:below={SYS}|unknown-code") == []  # subsumes only itself


def test_what_needs_a_terminology_service_follows_prefer_handling(api: InProcessClient) -> None:
    status, named, _ = outcome(api, "code:in=http://example.org/fhir/ValueSet/by-filter", prefer="handling=strict")
    assert (status, named) == (400, ["code:in"])
    status, named, text = outcome(api, "code:below=http://loinc.org|1234-5", prefer="handling=strict")
    assert (status, named) == (400, ["code:below"])
    assert "not on this server" in text
    reply = get(api, "/Observation?code:in=http://example.org/fhir/ValueSet/by-filter&_id=tri")
    assert reply.status == 200  # lenient: left out, and said so
    entries = reply.body["entry"]
    assert [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"] == ["tri"]
    warned = [e for e in entries if e["search"]["mode"] == "outcome"]
    assert warned
    assert "code:in" in str(warned[0]["resource"])
    assert "filter" in str(warned[0]["resource"])
    assert "code%3Ain" not in reply.body["link"][0]["url"]
    assert "code:in" not in reply.body["link"][0]["url"]


def test_bad_references_are_400_naming_the_parameter(api: InProcessClient) -> None:
    strict = {"prefer": "handling=strict"}
    assert outcome(api, "code:in=http://example.org/fhir/ValueSet/nowhere", **strict)[:2] == (400, ["code:in"])
    assert outcome(api, "code:in=http://example.org/fhir/ValueSet/nowhere")[0] == 200  # lenient: left out
    assert outcome(api, "code:below=polygon")[:2] == (400, ["code:below"])  # no system


def test_the_links_keep_the_modifier_as_written(api: InProcessClient) -> None:
    reply = get(api, "/Observation?code:in=http://example.org/fhir/ValueSet/polygons&_count=1")
    links = {link["relation"]: link["url"] for link in reply.body["link"]}
    assert "code:in=" in unquote(links["self"])
    following = get(api, "/Observation?" + links["next"].split("?", 1)[1])
    assert following.status == 200
    assert len([e for e in following.body["entry"] if e["search"]["mode"] == "match"]) == 1


def test_chains_and_has_expand_too(api: InProcessClient) -> None:
    assert api.request("PUT", "/Patient/p1", body={"resourceType": "Patient", "id": "p1"}).status in (200, 201)
    body = {**observation("tri-p1", SYS, "triangle"), "subject": {"reference": "Patient/p1"}}
    assert api.request("PUT", "/Observation/tri-p1", body=body).status in (200, 201)
    reply = get(api, f"/Patient?_has:Observation:subject:code:below={SYS}|polygon")
    assert [e["resource"]["id"] for e in reply.body["entry"]] == ["p1"]


class Dict:
    def __init__(self, *resources: dict[str, Any]) -> None:
        self.resources = resources

    def value_set(self, reference: str) -> dict[str, Any] | None:
        return next((r for r in self.resources if r["resourceType"] == "ValueSet" and r["url"] == reference), None)

    def code_system(self, url: str) -> dict[str, Any] | None:
        return next((r for r in self.resources if r["resourceType"] == "CodeSystem" and r["url"] == url), None)


def test_expansion_is_bounded_and_filters_are_refused() -> None:
    big = {
        "resourceType": "ValueSet",
        "url": "urn:big",
        "compose": {"include": [{"system": SYS, "concept": [{"code": str(n)} for n in range(MAX_CODES + 1)]}]},
    }
    query = parse("Observation", [("code:in", "urn:big")], strict=True)
    with pytest.raises(Exception, match="more than"):
        expand(query.criteria[0], Dict(big))
    query = parse("Observation", [("code:in", "http://example.org/fhir/ValueSet/by-filter")], strict=True)
    with pytest.raises(NeedsTerminology):
        expand(query.criteria[0], Dict(BY_FILTER))
    query = parse("Observation", [("code:in", "http://example.org/fhir/ValueSet/polygons")], strict=True)
    expanded = expand(query.criteria[0], Dict(POLYGONS))
    assert isinstance(expanded, Filter)
    assert expanded.modifier is None
    assert expanded.values == (TokenQuery(SYS, "triangle"), TokenQuery(SYS, "square"))


def test_an_empty_value_set_matches_nothing_and_its_negation_everything(tmp_path: Path) -> None:
    client = InProcessClient(build_dependencies(Settings(data_dir=tmp_path, audit="off")))
    square = [{"system": SYS, "concept": [{"code": "square"}]}]
    empty = {"resourceType": "ValueSet", "url": "urn:empty", "status": "active"}
    empty["compose"] = {"include": square, "exclude": square}  # what it includes, it excludes
    assert client.request("POST", "/ValueSet", body=empty).status == 201
    assert client.request("PUT", "/Observation/o", body=observation("o", SYS, "square")).status in (200, 201)
    assert found(client, "code:in=urn:empty") == []
    assert found(client, "code:not-in=urn:empty") == ["o"]


def test_opensearch_compiles_the_expanded_codes_and_the_empty_set() -> None:
    import dataclasses
    import json

    from fhirflow.adapters.opensearch.compiler import compile_query
    from tests.unit.test_opensearch_compiler import OPTIONS

    def body(query_text: str, terminology: Dict) -> str:
        query = parse("Observation", [tuple(query_text.split("=", 1))], strict=True)  # type: ignore[list-item]
        query = dataclasses.replace(query, criteria=(expand(query.criteria[0], terminology),))
        plan = compile_query(query, tenant="t1", page_size=10, search_after=None, options=OPTIONS)
        return json.dumps(plan.to_json()["body"]["query"])

    polygons = body("code:in=http://example.org/fhir/ValueSet/polygons", Dict(POLYGONS))
    assert f'"{SYS}|triangle"' in polygons
    assert f'"{SYS}|square"' in polygons
    assert "must_not" not in polygons
    assert "must_not" in body("code:not-in=http://example.org/fhir/ValueSet/polygons", Dict(POLYGONS))
    square = [{"system": SYS, "concept": [{"code": "square"}]}]
    empty = {"resourceType": "ValueSet", "url": "urn:empty", "compose": {"include": square, "exclude": square}}
    assert '{"match_none": {}}' in body("code:in=urn:empty", Dict(empty))
    assert '{"bool": {"must_not": [{"match_none": {}}]}}' in body("code:not-in=urn:empty", Dict(empty))
