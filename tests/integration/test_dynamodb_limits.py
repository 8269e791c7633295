"""DynamoDbResourceStore at DynamoDB's own limits, checked against the real DynamoDB Local:
100 items per TransactWriteItems and 4 MB per transaction."""

from __future__ import annotations

import orjson
import pytest

from fhirflow.adapters.aws.dynamodb_store import DynamoDbResourceStore, TooManyChanges
from fhirflow.adapters.memory import InMemoryBlobStore
from fhirflow.ports import Change, HistoryQuery, ResourceVersion


def create(tenant: str, id_: str, size: int = 10) -> Change:
    body = orjson.dumps({"resourceType": "Basic", "id": id_, "pad": "x" * size})
    return Change(ResourceVersion(tenant, "Basic", id_, 1, 1_700_000_000_000, False, "POST", body), None)


@pytest.fixture
def store(shared_tables) -> tuple[DynamoDbResourceStore, InMemoryBlobStore]:
    blobs = InMemoryBlobStore()
    return DynamoDbResourceStore(shared_tables.resources, client=shared_tables.client, blobs=blobs), blobs


def test_fifty_changes_fill_one_transaction_and_fifty_one_are_refused(store, tenant: str) -> None:
    dynamodb, _ = store
    dynamodb.commit([create(tenant, f"r{i}") for i in range(50)])  # 100 items: the limit, accepted
    assert len(dynamodb.history(HistoryQuery(tenant, count=100)).versions) == 50
    with pytest.raises(TooManyChanges) as refused:
        dynamodb.commit([create(tenant, f"s{i}") for i in range(51)])
    assert refused.value.status == 413
    assert len(dynamodb.history(HistoryQuery(tenant, count=100)).versions) == 50


def test_bodies_move_to_the_blob_store_to_keep_a_transaction_under_4_mb(store, tenant: str) -> None:
    dynamodb, blobs = store
    # 40 bodies of 60 KB: each under the 64 KB threshold, 4.8 MB with the heads' copies.
    changes = [create(tenant, f"m{i}", size=60_000) for i in range(40)]
    dynamodb.commit(changes)
    assert 0 < len(blobs.blobs) < 40
    for change in changes:
        assert dynamodb.current(tenant, "Basic", change.new.id).body == change.new.body
