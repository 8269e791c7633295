"""The OpenSearch backend against a real cluster (opt-in: no server can run on the build
machines, DESIGN.md §8).

Set ``FHIRFLOW_OPENSEARCH_URL`` (e.g. ``http://localhost:9200``, or an Amazon OpenSearch
domain endpoint with ``FHIRFLOW_OPENSEARCH_REGION`` set to sign requests with SigV4) to run
it. It creates a uniquely named index with the mapping, indexes the resources of the unit
semantics table through the adapter, runs the same queries as that table (so the fake
OpenSearch of the unit tests is checked against the real one) plus paging, includes and
versioning, and deletes the index.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from fhirflow.adapters.opensearch.client import opensearch_client
from fhirflow.adapters.opensearch.plan import CompileOptions
from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex
from tests.unit.test_opensearch_search import NOW, RESOURCES, ROWS, ids, search

URL = os.environ.get("FHIRFLOW_OPENSEARCH_URL")
pytestmark = pytest.mark.skipif(not URL, reason="FHIRFLOW_OPENSEARCH_URL is not set (no OpenSearch cluster to test)")


@pytest.fixture(scope="module")
def index() -> Iterator[OpenSearchSearchIndex]:
    assert URL is not None
    region = os.environ.get("FHIRFLOW_OPENSEARCH_REGION")
    name = f"fhirflow-test-{uuid.uuid4().hex[:12]}"
    adapter = OpenSearchSearchIndex(
        client_factory=lambda: opensearch_client(URL, region=region),
        index=name,
        refresh="wait_for",
        options=CompileOptions(now=NOW),
    )
    adapter.create_index(shards=1, replicas=0)
    try:
        for resource in RESOURCES:
            assert adapter.apply("t1", resource["resourceType"], resource["id"], 1, 1, resource)
        adapter.apply("t2", "Patient", "p1", 1, 1, dict(RESOURCES[0], name=[{"family": "Peter"}]))
        yield adapter
    finally:
        adapter.client.indices.delete(index=name)


@pytest.mark.parametrize(("resource_type", "query", "expected"), ROWS, ids=[f"{r[0]}?{r[1]}" for r in ROWS])
def test_search_matches(index: OpenSearchSearchIndex, resource_type: str, query: str, expected: set[str]) -> None:
    assert set(ids(search(index, resource_type, query))) == expected


def test_sort_and_paging(index: OpenSearchSearchIndex) -> None:
    assert ids(search(index, "Patient", "_sort=-birthdate")) == ["p2", "p1", "p3"]
    seen: list[str] = []
    cursor: list[object] | None = None
    while True:
        page = search(index, "Patient", "_sort=-birthdate", page_size=1, cursor=cursor)
        seen += ids(page)
        if (cursor := page.next_cursor) is None:
            break
    assert seen == ["p2", "p1", "p3"]


def test_totals_and_includes(index: OpenSearchSearchIndex) -> None:
    assert search(index, "Patient", "_total=accurate").total == 3
    assert search(index, "Patient", "_summary=count").total == 3
    result = search(index, "Observation", "_id=obs1&_include=Observation:subject&_include:iterate=Patient:organization")
    assert [h.key for h in result.includes] == ["Patient/p1", "Organization/o1"]
    result = search(index, "Patient", "_id=p1&_revinclude=Observation:subject")
    assert {h.id for h in result.includes} == {"obs1", "obs3"}


def test_external_versions_and_tombstones(index: OpenSearchSearchIndex) -> None:
    patient = {"resourceType": "Patient", "id": "v1", "meta": {"lastUpdated": "2024-01-01T00:00:00Z"}}
    assert index.apply("t3", "Patient", "v1", 2, 2, patient)
    assert not index.apply("t3", "Patient", "v1", 1, 1, patient)
    assert index.apply("t3", "Patient", "v1", 3, 3, None)
    assert index.indexed_version("t3", "Patient", "v1") == 3
    assert not index.apply("t3", "Patient", "v1", 2, 2, patient)
    assert index.indexed_version("t3", "Patient", "missing") is None


def test_the_search_service_engine_pages_both_ways(index: OpenSearchSearchIndex) -> None:
    """Keyset positions from real sort values (missing birthdates sort last, then first backwards)."""
    from urllib.parse import parse_qsl

    from fhirflow.adapters.opensearch.engine import OpenSearchSearchEngine
    from fhirflow.query import parse
    from fhirflow.search_ports import PageRequest, SearchScope

    engine = OpenSearchSearchEngine(index, clock=lambda: NOW)
    where = SearchScope("t1", "http://fhir.test", ("Patient",))
    query = parse("Patient", parse_qsl("_sort=-birthdate"), strict=True)
    seen, request = [], PageRequest(1)
    while True:
        page = engine.page(where, query, request)
        seen += page.hits
        if not page.more:
            break
        request = PageRequest(1, after=page.hits[-1].position)
    assert [hit.id for hit in seen] == ["p2", "p1", "p3"]
    back = engine.page(where, query, PageRequest(2, before=seen[-1].position))
    assert [hit.id for hit in back.hits] == ["p2", "p1"]
    assert engine.count(where, query) == 3
