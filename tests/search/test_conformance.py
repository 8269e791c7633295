"""Every row of the conformance table (``cases.py``) on the SQLite backend, through the search
service: all pages are walked by their ``next`` links, so paging is part of every row."""

from __future__ import annotations

from typing import Any

import pytest

from fhirflow.http import Application
from tests.search.cases import CASES, Case
from tests.search.client import get, ids


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((entry["url"] for entry in bundle.get("link", []) if entry["relation"] == relation), None)


def walk(app: Application, url: str, headers: dict[str, str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """The first page, and the matches and includes of every page."""
    reply = get(app, url, headers=headers)
    assert reply.status == 200, reply.body[:500]
    first = page = reply.json()
    matches, included = ids(page), ids(page, "include")
    for _ in range(200):
        following = link(page, "next")
        if following is None:
            return first, matches, included
        reply = get(app, following, headers=headers)
        assert reply.status == 200, reply.body[:500]
        page = reply.json()
        matches += ids(page)
        included += ids(page, "include")
    raise AssertionError("more than 200 pages")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case(shaped_app: Application, case: Case) -> None:
    """Each row, under each query shape the planner can choose (conftest.SHAPES)."""
    search_app = shaped_app
    headers = {"prefer": "handling=strict"} if case.strict else {}
    url = case.path() + (f"?{case.query}" if case.query else "")
    if case.status != 200:
        reply = get(search_app, url, headers=headers)
        assert reply.status == case.status, reply.body[:500]
        outcome = reply.json()
        assert outcome["resourceType"] == "OperationOutcome"
        named = [expr for issue in outcome["issue"] for expr in issue.get("expression", [])]
        assert case.error_param in named, outcome
        return
    first, matches, included = walk(search_app, url, headers)
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
