"""The DynamoDB tables fhirflow needs, as CreateTable requests (docs/dynamodb.md).

The CDK app declares the same tables; ``ensure_tables`` creates them where nothing else does
(DynamoDB Local for ``fhirflow serve --store dynamodb`` and the tests).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from fhirflow.adapters.aws import items

LEDGER_KEY = "pk"
LEDGER_TTL = "expires"


def resource_table(name: str) -> dict[str, Any]:
    """Heads and versions; a NEW_IMAGE stream feeds index-sync; two KEYS+INCLUDE GSIs serve history,
    a sparse one lists unfinished transactions for the sweeper."""
    history_projection = {
        "ProjectionType": "INCLUDE",
        # Enough to list a version without its body; bodies are fetched by key for the page only.
        "NonKeyAttributes": [
            items.TENANT,
            items.TYPE,
            items.ID,
            items.VERSION,
            items.LAST_UPDATED,
            items.DELETED,
            items.METHOD,
            items.CREATED,
        ],
    }
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": items.PK, "AttributeType": "S"},
            {"AttributeName": items.SK, "AttributeType": "S"},
            {"AttributeName": items.TYPE_PK, "AttributeType": "S"},
            {"AttributeName": items.SYSTEM_PK, "AttributeType": "S"},
            {"AttributeName": items.TIME_SK, "AttributeType": "S"},
            {"AttributeName": items.TX_OPEN, "AttributeType": "S"},
            {"AttributeName": items.TX_DUE, "AttributeType": "N"},
        ],
        "KeySchema": [
            {"AttributeName": items.PK, "KeyType": "HASH"},
            {"AttributeName": items.SK, "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": items.TYPE_INDEX,
                "KeySchema": [
                    {"AttributeName": items.TYPE_PK, "KeyType": "HASH"},
                    {"AttributeName": items.TIME_SK, "KeyType": "RANGE"},
                ],
                "Projection": history_projection,
            },
            {
                "IndexName": items.SYSTEM_INDEX,
                "KeySchema": [
                    {"AttributeName": items.SYSTEM_PK, "KeyType": "HASH"},
                    {"AttributeName": items.TIME_SK, "KeyType": "RANGE"},
                ],
                "Projection": history_projection,
            },
            {
                # Sparse: only unfinished multi-batch transactions carry ``ox``, so the sweeper finds
                # them by due time with one Query and no Scan (docs/dynamodb.md, "Transactions").
                "IndexName": items.OPEN_INDEX,
                "KeySchema": [
                    {"AttributeName": items.TX_OPEN, "KeyType": "HASH"},
                    {"AttributeName": items.TX_DUE, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": [items.TX_STATE, items.TX_BATCHES]},
            },
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    }


def ledger_table(name: str) -> dict[str, Any]:
    """Which change events were published (index-sync's idempotency record), expiring by TTL."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": LEDGER_KEY, "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": LEDGER_KEY, "KeyType": "HASH"}],
    }


def ensure_tables(client: Any, resource_table_name: str, ledger_table_name: str, *, timeout: float = 30.0) -> None:
    """Create the tables that do not exist yet and wait until they are active."""
    existing: set[str] = set()
    for page in client.get_paginator("list_tables").paginate():
        existing.update(page["TableNames"])
    created = []
    for definition in (resource_table(resource_table_name), ledger_table(ledger_table_name)):
        if definition["TableName"] not in existing:
            with contextlib.suppress(client.exceptions.ResourceInUseException):  # another process made it
                client.create_table(**definition)
            created.append(definition["TableName"])
    deadline = time.monotonic() + timeout
    for name in created:
        while client.describe_table(TableName=name)["Table"]["TableStatus"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise TimeoutError(f"DynamoDB table {name} did not become active within {timeout}s")
            time.sleep(0.1)
    if ledger_table_name in created:
        client.update_time_to_live(
            TableName=ledger_table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": LEDGER_TTL}
        )
