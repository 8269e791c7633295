"""``DynamoDbEventLedger``: which change events index-sync has published, in its own table.

Kept apart from the resource table so that its writes do not feed the stream they record.
Entries expire by TTL after a week, long after the stream's 24-hour retention ends any replay.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fhirflow.adapters.aws import clients
from fhirflow.adapters.aws.items import escape_tenant
from fhirflow.adapters.aws.schema import LEDGER_KEY, LEDGER_TTL
from fhirflow.errors import ServiceUnavailable

if TYPE_CHECKING:
    from fhirflow_contracts import ResourceChanged

RETENTION_SECONDS = 7 * 24 * 3600
_GET_LIMIT, _WRITE_LIMIT = 100, 25


class DynamoDbEventLedger:
    """Event ids are namespaced by tenant in the key (``{tenant}#{eventId}``): tenant in every key."""

    def __init__(
        self, table: str, *, client: Any = None, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        self.table = table
        self.client = client or clients.lazy_client("dynamodb", endpoint_url=endpoint_url, region=region)

    @staticmethod
    def entry_key(event: ResourceChanged) -> str:
        return f"{escape_tenant(event.tenant)}#{event.metadata.event_id}"

    def published(self, events: Sequence[ResourceChanged]) -> set[str]:
        ids = {self.entry_key(e): e.metadata.event_id for e in events}
        found: set[str] = set()
        unique = list(ids)
        for start in range(0, len(unique), _GET_LIMIT):
            keys = [{LEDGER_KEY: {"S": k}} for k in unique[start : start + _GET_LIMIT]]
            pending: dict[str, Any] | None = {self.table: {"Keys": keys, "ConsistentRead": True}}
            attempt = 0
            while pending:
                with clients.translated("The event ledger"):
                    reply = self.client.batch_get_item(RequestItems=pending)
                found.update(ids[item[LEDGER_KEY]["S"]] for item in reply.get("Responses", {}).get(self.table, []))
                pending = reply.get("UnprocessedKeys") or None
                attempt = _backoff(attempt) if pending else attempt
        return found

    def record(self, events: Sequence[ResourceChanged]) -> None:
        expires = str(int(time.time()) + RETENTION_SECONDS)
        unique = list(dict.fromkeys(self.entry_key(e) for e in events))
        for start in range(0, len(unique), _WRITE_LIMIT):
            puts = [
                {"PutRequest": {"Item": {LEDGER_KEY: {"S": k}, LEDGER_TTL: {"N": expires}}}}
                for k in unique[start : start + _WRITE_LIMIT]
            ]
            pending: dict[str, Any] | None = {self.table: puts}
            attempt = 0
            while pending:
                with clients.translated("The event ledger"):
                    reply = self.client.batch_write_item(RequestItems=pending)
                pending = reply.get("UnprocessedItems") or None
                attempt = _backoff(attempt) if pending else attempt


def _backoff(attempt: int) -> int:
    if attempt >= 8:
        raise ServiceUnavailable("The event ledger is busy; retry shortly", headers={"Retry-After": "1"})
    time.sleep(min(0.05 * 2**attempt, 1.0))
    return attempt + 1
