"""Every row of the conformance table (``cases.py``) on the SQLite backend, through the search
service (``test_conformance_opensearch.py`` runs the same rows, through :func:`check_case`, on
the OpenSearch backend): all pages are walked by their ``next`` links, so paging is part of every row. A POST
row sends its query as the form body of ``POST …/_search``; its next pages are GET links."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest

from fhirflow.http import Application
from fhirflow.query import parse
from fhirflow.query.ast import Filter
from fhirflow.subsetting import SUBSETTED
from tests.search.cases import CASES, Case, Shape
from tests.search.client import get, ids, post
from tests.support.lambda_http import Reply


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((entry["url"] for entry in bundle.get("link", []) if entry["relation"] == relation), None)


def send(app: Application, case: Case, headers: dict[str, str]) -> Reply:
    """The row's first request: ``GET path?query``, or ``POST path/_search`` with the query as a form."""
    if case.method == "POST":
        return post(app, case.target(), case.query, headers=headers)
    assert case.method == "GET", case.method
    return get(app, case.target() + (f"?{case.query}" if case.query else ""), headers=headers)


def match_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def walk(
    app: Application, reply: Reply, headers: dict[str, str]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """The first page (``reply``), and the matched resources and included ``Type/id`` of every page."""
    assert reply.status == 200, reply.body[:500]
    first = page = reply.json()
    matches, included = match_resources(page), ids(page, "include")
    for _ in range(200):
        following = link(page, "next")
        if following is None:
            return first, matches, included
        reply = get(app, following, headers=headers)
        assert reply.status == 200, reply.body[:500]
        page = reply.json()
        matches += match_resources(page)
        included += ids(page, "include")
    raise AssertionError("more than 200 pages")


def check_shape(shape: Shape, resources: list[dict[str, Any]]) -> None:
    """What ``_summary``/``_elements`` left of each match (cases.Shape)."""
    assert resources, "a shape needs matches to look at"
    for resource in resources:
        name = f"{resource['resourceType']}/{resource['id']}"
        elements = {key.removeprefix("_") for key in resource} - {"resourceType"}
        assert elements <= shape.only, f"{name} holds {sorted(elements - shape.only)}, which were not asked for"
        assert shape.present <= resource.keys(), f"{name} lost {sorted(shape.present - resource.keys())}"
        tags = [(t.get("system"), t.get("code")) for t in resource.get("meta", {}).get("tag", [])]
        marked = (SUBSETTED["system"], SUBSETTED["code"]) in tags
        assert marked == shape.subsetted, f"{name}: SUBSETTED tag {'missing' if shape.subsetted else 'unexpected'}"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case(shaped_app: Application, case: Case) -> None:
    """Each row, under each query shape the planner can choose (conftest.SHAPES)."""
    check_case(shaped_app, case)


def check_case(search_app: Application, case: Case) -> None:
    """Send the row, walk its pages, and hold the answer to the row's expectations (both backends)."""
    headers = {"prefer": "handling=strict"} if case.strict else {}
    reply = send(search_app, case, headers)
    if case.status != 200:
        assert reply.status == case.status, reply.body[:500]
        outcome = reply.json()
        assert outcome["resourceType"] == "OperationOutcome"
        named = [expr for issue in outcome["issue"] for expr in issue.get("expression", [])]
        assert case.error_param in named, outcome
        return
    first, resources, included = walk(search_app, reply, headers)
    matches = [f"{r['resourceType']}/{r['id']}" for r in resources]
    assert first["resourceType"] == "Bundle"
    assert first["type"] == "searchset"
    if case.expected is not None:
        if case.ordered:
            assert matches == list(case.expected)
        else:
            assert len(matches) == len(set(matches)), "a match came back twice"
            assert sorted(matches) == sorted(case.expected)
    if case.included is not None:
        assert sorted(set(included)) == sorted(case.included)
        assert not set(included) & set(matches), "a match was also included"
    if case.total is not None:
        assert first["total"] == case.total
    if case.no_total:
        assert "total" not in first
    if case.warning is not None:
        outcomes = [e["resource"] for e in first["entry"] if e["search"]["mode"] == "outcome"]
        assert outcomes, "a lenient search reports what it left out"
        assert any(case.warning in issue.get("expression", []) for issue in outcomes[0]["issue"])
        self_link = link(first, "self")
        assert self_link is not None
        assert f"{case.warning}=" not in self_link.split("?", 1)[-1]
    if case.shape is not None:
        check_shape(case.shape, resources)
    elif case.expected:
        assert not any(
            tag.get("code") == SUBSETTED["code"] for r in resources for tag in r.get("meta", {}).get("tag", [])
        ), "a match was subsetted though the row asks for no _summary/_elements"


def test_the_table_covers_the_issue() -> None:
    """At least one row per parameter type, prefix, modifier and result feature the issue lists."""
    needles = {
        "types": ["string-", "token-", "date-", "number-", "quantity-", "reference-", "uri-", "composite"],
        "prefixes": [f"date-{p}" for p in ("ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")]
        + [f"number-{p}" for p in ("ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")],
        "special": [
            "common-id",
            "common-lastupdated",
            "common-tag",
            "common-profile",
            "common-security",
            "common-source",
            "common-text",
            "common-content",
            "common-list",
            "system-types",
        ],
        "results": [
            "chain-two-levels",
            "has-nested",
            "include-iterate",
            "revinclude-iterate",
            "sort-several",
            "total-none",
            "summary-count",
            "compartment",
            "system-all-types",
        ],
    }
    case_ids = [case.id for case in CASES]
    for group, prefixes in needles.items():
        for needle in prefixes:
            assert any(i.startswith(needle) for i in case_ids), f"{group}: no row for {needle}"
    queries = " ".join(case.query for case in CASES)
    for modifier in (":exact", ":contains", ":missing", ":text", ":not", ":in", ":of-type", ":identifier"):
        assert modifier in queries, modifier
    for modifier in (":below", ":above", "subject:Patient"):
        assert modifier in queries, modifier
    # result parameters (search.html#return), each _summary mode on its own
    for needle in ("_elements=", "_summary=true", "_summary=text", "_summary=data", "_summary=count", "_contained="):
        assert any(needle in case.query for case in CASES if case.status == 200), f"no row for {needle}"
    assert any(c.id == "count-zero" for c in CASES), "no row for _count=0"
    assert any(c.expected and "_count=" in c.query and "_count=0" not in c.query for c in CASES), "no paged _count row"
    assert any(c.shape is not None and "_elements=" in c.query for c in CASES), "no row checks what _elements leaves"
    for mode in ("true", "text", "data"):
        assert any(c.shape is not None and f"_summary={mode}" in c.query for c in CASES), f"_summary={mode}: no shape"
    # POST _search (http.html#search) for each kind of search
    posted = [c for c in CASES if c.method == "POST" and c.status == 200]
    assert any(c.resource_type and c.compartment is None for c in posted), "no POST type search"
    assert any(c.resource_type is None and c.compartment is None for c in posted), "no POST system search"
    assert any(c.compartment is not None for c in posted), "no POST compartment search"
    # modifiers on the parameter type they are defined for, as the registry types the row's parameters
    used = typed_modifiers()
    for param_type, modifier in (
        ("date", "missing"),
        ("number", "missing"),
        ("quantity", "missing"),
        ("uri", "above"),
        ("uri", "below"),
        ("token", "in"),
        ("token", "not-in"),
        ("token", "above"),
        ("token", "below"),
        ("reference", "identifier"),
    ):
        assert (param_type, modifier) in used, f"no row for :{modifier} on a {param_type} parameter"


def typed_modifiers() -> set[tuple[str, str]]:
    """(parameter type, modifier) of the top-level filters of the rows that answer 200 without
    leaving a parameter out (a lenient row's refused modifier does not count)."""
    used: set[tuple[str, str]] = set()
    for case in CASES:
        if case.status != 200 or case.warning is not None:
            continue
        query = parse(case.resource_type, parse_qsl(case.query, keep_blank_values=True), strict=False)
        used |= {(c.param.type, c.modifier) for c in query.criteria if isinstance(c, Filter) and c.modifier}
    return used
