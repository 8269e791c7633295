"""The fake OpenSearch's evaluator (``tests/support/opensearch_fake.py``) pinned on small cases,
so a conformance row that passes on it passes for the right reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from opensearchpy.exceptions import ConflictError, RequestError

from tests.support.opensearch_fake import FakeOpenSearch, Mapping, Scope, matches

__all__ = ["FakeOpenSearch"]  # other tests import the fake from here too


DOC = {
    "tenant": "t",
    "tokens": [{"p": "code", "system": "a", "code": "1"}, {"p": "code", "system": "b", "code": "2"}],
    "narrative": "Héllo big World",
}


def nested_token(system: str, code: str) -> dict[str, Any]:
    return {
        "nested": {
            "path": "tokens",
            "query": {"bool": {"filter": [{"term": {"tokens.system": system}}, {"term": {"tokens.code": code}}]}},
        }
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (nested_token("a", "1"), True),
        (nested_token("a", "2"), False),  # nested: system and code of one coding, not across codings
        ({"match": {"narrative": {"query": "hello world", "operator": "and"}}}, True),
        ({"match_phrase": {"narrative": "hello world"}}, False),
        ({"match_phrase": {"narrative": "big world"}}, True),
        ({"bool": {"should": [{"term": {"tenant": "x"}}], "minimum_should_match": 1}}, False),
        ({"bool": {"must_not": [{"term": {"tenant": "x"}}]}}, True),
        ({"wildcard": {"tenant": {"value": "*t*"}}}, True),
        ({"wildcard": {"tenant": {"value": "\\*"}}}, False),
        # a text field holds its folded tokens: term and prefix see tokens, not the whole text
        ({"term": {"narrative": "hello"}}, True),
        ({"term": {"narrative": "Héllo big World"}}, False),
        ({"prefix": {"narrative": "wor"}}, True),
        ({"prefix": {"narrative": "big w"}}, False),
        # a keyword holds the whole value, case and all
        ({"term": {"tenant": "T"}}, False),
        # a field under a nested path is invisible outside a nested query
        ({"term": {"tokens.code": "1"}}, False),
    ],
)
def test_the_evaluator(query: dict[str, Any], expected: bool) -> None:
    assert matches(query, Scope(DOC)) is expected


def test_external_gte_lets_the_same_version_through_in_bulk() -> None:
    fake = FakeOpenSearch()
    fake.index(index="i", id="a", body={"n": 1}, version=2, version_type="external")

    def bulk(version: int, n: int) -> int:
        action = {"index": {"_id": "a", "version": version, "version_type": "external_gte"}}
        body = orjson.dumps(action) + b"\n" + orjson.dumps({"n": n}) + b"\n"
        [item] = fake.bulk(body=body, index="i")["items"]
        return int(item["index"]["status"])

    assert bulk(2, 2) == 201
    assert bulk(1, 3) == 409
    assert fake.docs["a"] == {"n": 2}


def test_external_versions_only_move_forward() -> None:
    fake = FakeOpenSearch()
    fake.index(index="i", id="a", body={}, version=2, version_type="external")
    with pytest.raises(ConflictError):
        fake.index(index="i", id="a", body={}, version=2, version_type="external")
    assert fake.get(index="i", id="a")["_version"] == 2


def test_a_keyword_longer_than_ignore_above_is_not_indexed() -> None:
    mapping = Mapping({"properties": {"k": {"type": "keyword", "ignore_above": 3}}})
    assert matches({"exists": {"field": "k"}}, Scope({"k": "abc"}, None, mapping))
    assert not matches({"exists": {"field": "k"}}, Scope({"k": "abcd"}, None, mapping))


def test_an_unmapped_field_matches_nothing() -> None:
    assert not matches({"term": {"nowhere": "x"}}, Scope({"nowhere": "x"}))


@pytest.mark.parametrize(
    ("query", "refused"),
    [
        ({"bool": {"filter": [{"term": {"tenant": str(i)}} for i in range(1024)]}}, False),
        ({"bool": {"filter": [{"term": {"tenant": str(i)}} for i in range(1025)]}}, True),
        # Lucene 9 counts the leaves of the whole tree, through bools and nested queries
        ({"bool": {"filter": [nested_token("a", str(i)) for i in range(513)]}}, True),
        ({"terms": {"tenant": [str(i) for i in range(65_536)]}}, False),
        ({"terms": {"tenant": [str(i) for i in range(65_537)]}}, True),
        ({"wildcard": {"tenant": {"value": "*" + "x" * 1000 + "*"}}}, True),
    ],
)
def test_the_fake_refuses_what_a_cluster_would_not_run(query: dict[str, Any], refused: bool) -> None:
    fake = FakeOpenSearch()
    fake.docs["d"] = DOC
    if refused:
        with pytest.raises(RequestError):
            fake.search(index="i", body={"query": query})
    else:
        fake.search(index="i", body={"query": query})
