"""A fresh stack: the OpenSearch domain exists, the index does not (index-sync creates it with its
mapping on the first write). Until then every search must read as empty, not fail with 500:
searches, counts, chained lookups, ``_include``, the reference lookups of conditional references
and the version check of a document.

The double below answers like an empty OpenSearch cluster: opensearch-py raises ``NotFoundError``
with ``index_not_found_exception`` for any request naming a missing index.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest
from opensearchpy.exceptions import NotFoundError

from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex
from fhirflow.query import parse


def _missing(index: str) -> NotFoundError:
    info = {
        "error": {"type": "index_not_found_exception", "reason": f"no such index [{index}]", "index": index},
        "status": 404,
    }
    return NotFoundError(404, "index_not_found_exception", info)


class EmptyCluster:
    def __init__(self) -> None:
        self.searched: list[dict[str, Any]] = []

    def search(self, *, index: str, body: dict[str, Any], **_: Any) -> Any:
        self.searched.append(body)
        raise _missing(index)

    def get(self, *, index: str, **_: Any) -> Any:
        raise _missing(index)


class BrokenCluster(EmptyCluster):
    """Another 404 (a missing alias target, a wrong path): not to be mistaken for "no index yet"."""

    def search(self, *, index: str, body: dict[str, Any], **_: Any) -> Any:
        raise NotFoundError(404, "resource_not_found_exception", {})


def search(index: OpenSearchSearchIndex, resource_type: str, query: str) -> Any:
    parsed = parse(resource_type, parse_qsl(query, keep_blank_values=True), strict=True)
    return index.search(parsed, tenant="t1", page_size=10)


@pytest.mark.parametrize(
    "query",
    ["", "name=anna", "_count=0&_total=accurate", "subject:Patient.name=anna", "_include=Observation:subject"],
)
def test_a_missing_index_searches_as_empty(query: str) -> None:
    cluster = EmptyCluster()
    index = OpenSearchSearchIndex(client=cluster, index="resources")
    result = search(index, "Observation" if "subject" in query else "Patient", query)
    assert result.matches == []
    assert result.total in (0, None)
    assert cluster.searched, "the request reached the cluster"


def test_a_missing_index_has_no_references_and_no_versions() -> None:
    index = OpenSearchSearchIndex(client=EmptyCluster(), index="resources")
    assert index.references_of("t1", ["Patient/a"]) == []
    assert index.indexed_version("t1", "Patient", "a") is None


def test_other_not_found_answers_still_fail() -> None:
    index = OpenSearchSearchIndex(client=BrokenCluster(), index="resources")
    with pytest.raises(NotFoundError):
        search(index, "Patient", "name=anna")
