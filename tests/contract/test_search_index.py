"""The SearchIndex contract (the write side index-sync uses): SQLite, the in-memory fake, and
OpenSearch — on the fake OpenSearch of tests/unit (a double of the service, like moto), and on a
real cluster when ``FHIRFLOW_OPENSEARCH_URL`` points at one (``FHIRFLOW_OPENSEARCH_REGION`` set:
requests are SigV4-signed); without it that case is skipped, saying so."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from fhirflow.ports import IndexWrite, SearchIndex

LIVE_URL = os.environ.get("FHIRFLOW_OPENSEARCH_URL")


@pytest.fixture(params=["sqlite", "memory", "opensearch-fake", "opensearch"])
def index(request: pytest.FixtureRequest, tmp_path) -> Iterator[SearchIndex]:
    if request.param == "sqlite":
        from fhirflow.adapters.sqlite.database import SqliteDatabase
        from fhirflow.adapters.sqlite.index import SqliteSearchIndex

        yield SqliteSearchIndex(SqliteDatabase(tmp_path / "index.sqlite3"))
    elif request.param == "memory":
        from fhirflow.adapters.memory import InMemorySearchIndex

        yield InMemorySearchIndex()
    elif request.param == "opensearch-fake":
        from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex
        from tests.unit.test_opensearch_fake import FakeOpenSearch

        yield OpenSearchSearchIndex(client=FakeOpenSearch(), create_missing=True)
    else:
        yield from live_opensearch_index()


def live_opensearch_index() -> Iterator[SearchIndex]:
    if not LIVE_URL:
        pytest.skip("FHIRFLOW_OPENSEARCH_URL is not set: no OpenSearch cluster to run the contract against")
    from fhirflow.adapters.opensearch.client import opensearch_client
    from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex

    region = os.environ.get("FHIRFLOW_OPENSEARCH_REGION")
    adapter = OpenSearchSearchIndex(
        client_factory=lambda: opensearch_client(LIVE_URL, region=region),
        index=f"fhirflow-contract-{uuid.uuid4().hex[:12]}",
        create_missing=True,
    )
    try:
        yield adapter
    finally:
        adapter.client.indices.delete(index=adapter.index, ignore_unavailable=True)


def patient(version: int) -> dict[str, object]:
    return {"resourceType": "Patient", "id": "p", "meta": {"versionId": str(version)}}


def test_newer_versions_replace_older_ones(index: SearchIndex) -> None:
    assert index.indexed_version("t", "Patient", "p") is None
    assert index.apply("t", "Patient", "p", 1, 10, patient(1)) is True
    assert index.apply("t", "Patient", "p", 3, 30, patient(3)) is True
    assert index.indexed_version("t", "Patient", "p") == 3


def test_equal_or_older_versions_change_nothing(index: SearchIndex) -> None:
    index.apply("t", "Patient", "p", 2, 20, patient(2))
    assert index.apply("t", "Patient", "p", 2, 20, patient(2)) is False
    assert index.apply("t", "Patient", "p", 1, 10, patient(1)) is False
    assert index.indexed_version("t", "Patient", "p") == 2


def test_a_deletion_is_a_tombstone_that_older_versions_cannot_undo(index: SearchIndex) -> None:
    index.apply("t", "Patient", "p", 1, 10, patient(1))
    assert index.apply("t", "Patient", "p", 2, 20, None) is True
    assert index.indexed_version("t", "Patient", "p") == 2
    assert index.apply("t", "Patient", "p", 1, 10, patient(1)) is False
    assert index.apply("t", "Patient", "p", 3, 30, patient(3)) is True


def test_resources_and_tenants_are_separate(index: SearchIndex) -> None:
    index.apply("t1", "Patient", "p", 5, 50, patient(5))
    assert index.indexed_version("t2", "Patient", "p") is None
    assert index.indexed_version("t1", "Observation", "p") is None
    assert index.apply("t2", "Patient", "p", 1, 10, patient(1)) is True


def test_a_batch_reports_each_write_in_order(index: SearchIndex) -> None:
    index.apply("t", "Patient", "p", 2, 20, patient(2))
    writes = [
        IndexWrite("t", "Patient", "p", 1, 10, patient(1)),  # older than what is indexed
        IndexWrite("t", "Patient", "q", 1, 10, patient(1)),
        IndexWrite("t", "Patient", "p", 3, 30, None),  # a deletion
        IndexWrite("t", "Patient", "q", 2, 20, patient(2)),  # the same resource twice: body order
        IndexWrite("t", "Patient", "q", 2, 20, patient(2)),  # and a replay within the batch
    ]
    assert index.apply_batch(writes) == [False, True, True, True, False]
    assert (index.indexed_version("t", "Patient", "p"), index.indexed_version("t", "Patient", "q")) == (3, 2)
    assert index.apply_batch(writes) == [False] * len(writes)
    assert index.apply_batch([]) == []
