"""Runtime SearchParameters on the OpenSearch index (fake client of ``test_opensearch_fake.py``):
documents are built with the tenant's registry, SearchParameter writes are recorded before the
batch's documents are built, and the reindex walk rewrites documents at their own version.

The catalog here is an in-memory double of the port the index uses (``IndexCatalog``); the
DynamoDB catalog itself runs on DynamoDB Local in tests/integration/test_searchparams_aws.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from fhirflow.adapters.opensearch.reindex import OpenSearchReindexer
from fhirflow.adapters.opensearch.search import IndexedResource, OpenSearchSearchIndex
from fhirflow.ports import IndexWrite, IndexWriteSkipped
from fhirflow.searchparams.custom import build_tenant_params, registry_with
from fhirflow.searchparams.registry import Registry
from tests.unit.test_opensearch_fake import FakeOpenSearch
from tests.unit.test_reindex import EYE, eye_colour


class MemoryCatalog:
    """Active SearchParameters by (tenant, id), newest version wins; ``fail`` refuses to record."""

    def __init__(self) -> None:
        self.definitions: dict[tuple[str, str], tuple[int, dict[str, Any] | None]] = {}
        self.fail = False
        self.marked: list[tuple[str, tuple[str, ...], str | None, int]] = []

    def index_registry(self, tenant: str) -> Registry:
        resources = [(id_, r) for (t, id_), (_, r) in self.definitions.items() if t == tenant and r is not None]
        return registry_with([p for _, p in build_tenant_params(resources)])

    def record(self, tenant: str, id_: str, version: int, resource: dict[str, Any] | None) -> bool:
        if self.fail:
            raise RuntimeError("the catalog is down")
        held = self.definitions.get((tenant, id_))
        if held is not None and held[0] >= version:
            return False
        self.definitions[(tenant, id_)] = (version, resource)
        return True

    def generation(self, tenant: str) -> int:
        return len(self.definitions)

    def mark_searchable(self, tenant: str, types: Sequence[str], url: str | None, since: int) -> tuple[str, ...]:
        self.marked.append((tenant, tuple(types), url, since))
        return ("Patient.eye-colour",)


def patient(id_: str, colour: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": id_}
    if colour:
        resource["extension"] = [{"url": EYE, "valueCode": colour}]
    return resource


def eye_codes(fake: FakeOpenSearch, tenant: str, id_: str) -> list[str]:
    doc = fake.docs[f"{tenant}/Patient/{id_}"]
    return [t["code"] for t in doc.get("tokens", []) if t["p"] == "eye-colour"]


@pytest.fixture
def fake() -> FakeOpenSearch:
    return FakeOpenSearch()


@pytest.fixture
def catalog() -> MemoryCatalog:
    return MemoryCatalog()


@pytest.fixture
def index(fake: FakeOpenSearch, catalog: MemoryCatalog) -> OpenSearchSearchIndex:
    return OpenSearchSearchIndex(client=fake, index="resources", catalog=catalog)


def test_a_batch_with_a_searchparameter_indexes_its_resources_with_it(
    fake: FakeOpenSearch, catalog: MemoryCatalog, index: OpenSearchSearchIndex
) -> None:
    results = index.apply_batch(
        [
            IndexWrite("t", "Patient", "a", 1, 1, patient("a", "blue")),
            IndexWrite("t", "SearchParameter", "eye", 1, 1, {**eye_colour(), "id": "eye"}),
            IndexWrite("u", "Patient", "b", 1, 1, patient("b", "blue")),  # another tenant
        ]
    )
    assert results == [True, True, True]
    assert catalog.definitions[("t", "eye")][0] == 1
    assert eye_codes(fake, "t", "a") == ["blue"]  # earlier in the batch, built after the record
    assert eye_codes(fake, "u", "b") == []


def test_a_searchparameter_that_cannot_be_recorded_stops_the_batch_there(
    fake: FakeOpenSearch, catalog: MemoryCatalog, index: OpenSearchSearchIndex
) -> None:
    catalog.fail = True
    results = index.apply_batch(
        [
            IndexWrite("t", "Patient", "a", 1, 1, patient("a")),
            IndexWrite("t", "SearchParameter", "eye", 1, 1, {**eye_colour(), "id": "eye"}),
            IndexWrite("t", "Patient", "b", 1, 1, patient("b")),
        ]
    )
    assert results[0] is True
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[2], IndexWriteSkipped)
    assert set(fake.docs) == {"t/Patient/a"}
    catalog.fail = False  # the retry: the index already holds version 1, the catalog is still told
    assert index.apply_batch([IndexWrite("t", "SearchParameter", "eye", 1, 1, {**eye_colour(), "id": "eye"})]) == [True]
    assert index.apply_batch([IndexWrite("t", "SearchParameter", "eye", 1, 1, {**eye_colour(), "id": "eye"})]) == [
        False
    ]
    assert catalog.definitions[("t", "eye")][0] == 1


def test_the_walk_rewrites_current_documents_at_their_version_in_key_order(
    fake: FakeOpenSearch, catalog: MemoryCatalog, index: OpenSearchSearchIndex
) -> None:
    writes = [IndexWrite("t", "Patient", f"p{n}", 2, 1, patient(f"p{n}", "blue")) for n in range(5)]
    writes.append(IndexWrite("t", "Patient", "gone", 3, 1, None))
    writes.append(IndexWrite("t", "Observation", "o", 1, 1, {"resourceType": "Observation", "id": "o"}))
    assert all(r is True for r in index.apply_batch(writes))
    catalog.record("t", "eye", 1, {**eye_colour(), "id": "eye"})  # recorded elsewhere, after the writes
    assert eye_codes(fake, "t", "p0") == []
    reindexer = OpenSearchReindexer(index, catalog)
    assert reindexer.total("t", ["Patient"]) == 5

    first = reindexer.batch("t", ["Patient"], None, 3)
    assert (first.position, first.processed, first.done) == (("Patient", "p2"), 3, False)
    second = reindexer.batch("t", ["Patient"], first.position, 3)
    assert (second.position, second.processed, second.done) == (("Patient", "p4"), 2, True)
    assert all(eye_codes(fake, "t", f"p{n}") == ["blue"] for n in range(5))
    assert {fake.versions[f"t/Patient/p{n}"] for n in range(5)} == {2}  # at their own version
    assert reindexer.finish("t", ["Patient"], None, 1) == ("Patient.eye-colour",)


def test_a_rewrite_never_replaces_a_newer_version(fake: FakeOpenSearch, index: OpenSearchSearchIndex) -> None:
    index.apply_batch([IndexWrite("t", "Patient", "a", 3, 1, patient("a", "brown"))])
    stale = IndexedResource("Patient", "a", 2, 1, patient("a", "blue"))
    assert index.rewrite("t", [stale]) == [False]
    assert fake.versions["t/Patient/a"] == 3
    assert fake.docs["t/Patient/a"]["resource"]["extension"][0]["valueCode"] == "brown"
