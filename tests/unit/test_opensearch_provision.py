"""OpenSearchSearchIndex.provision, what the deploy-time custom resource does (on the executing
fake): create with the mapping when missing; leave an existing index (and its documents) alone;
put the mapping on update; an incompatible mapping is refused, not half-applied."""

from __future__ import annotations

import pytest
from opensearchpy.exceptions import RequestError

from fhirflow.adapters.opensearch.mappings import index_mapping
from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex
from tests.support.opensearch_fake import FakeOpenSearch


def test_a_missing_index_is_created_with_the_mapping() -> None:
    fake = FakeOpenSearch()
    assert OpenSearchSearchIndex(client=fake, index="i").provision(update_mapping=False) is True
    assert fake.created["i"]["mappings"] == index_mapping()


def test_an_existing_index_is_left_alone_on_create() -> None:
    fake = FakeOpenSearch()
    fake.indices.create(index="i", body={"mappings": {"properties": {"kept": {"type": "keyword"}}}})
    assert OpenSearchSearchIndex(client=fake, index="i").provision(update_mapping=False) is False
    assert fake.created["i"]["mappings"] == {"properties": {"kept": {"type": "keyword"}}}
    assert fake.mapping_puts == []


def test_update_puts_the_mapping_on_the_existing_index() -> None:
    fake = FakeOpenSearch()
    fake.indices.create(index="i", body={"mappings": {"properties": {"kept": {"type": "keyword"}}}})
    assert OpenSearchSearchIndex(client=fake, index="i").provision(update_mapping=True) is False
    assert fake.mapping_puts == ["i"]
    properties = fake.created["i"]["mappings"]["properties"]
    assert properties["kept"] == {"type": "keyword"}
    assert set(index_mapping()["properties"]) <= set(properties)


def test_an_incompatible_mapping_fails_the_update() -> None:
    fake = FakeOpenSearch()
    fake.indices.create(index="i", body={"mappings": {"properties": {"tenant": {"type": "long"}}}})
    with pytest.raises(RequestError):
        OpenSearchSearchIndex(client=fake, index="i").provision(update_mapping=True)
    assert fake.created["i"]["mappings"]["properties"]["tenant"] == {"type": "long"}
