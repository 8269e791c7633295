"""TransactWriteItems and BatchWriteItem the way the multi-batch protocol uses them.

- :func:`transact`: one call; brief conflicts with other transactions are retried with jitter,
  throttling becomes a 503, failed conditions raise :class:`ConditionsFailed` with the reasons.
- :func:`transact_tolerant`: for the idempotent steps (apply, release): items whose condition
  fails are already done, or not this transaction's, and are dropped; the rest is written.
- :func:`batch_delete`: unconditional deletes, 25 per call, unprocessed ones retried.
- :func:`first_conflict`: which change a cancelled transaction failed on, from its reasons.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from fhirflow.adapters.aws import clients, items
from fhirflow.errors import ServiceUnavailable

_CONFLICT_RETRIES = 6
_BATCH_WRITE_LIMIT = 25
_THROTTLE_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"})


class ConditionsFailed(Exception):
    def __init__(self, reasons: list[dict[str, Any]]) -> None:
        super().__init__("conditional check failed")
        self.reasons = reasons

    def failed(self) -> set[int]:
        """Positions of the items whose condition failed (none for a single-item UpdateItem)."""
        return {i for i, r in enumerate(self.reasons) if r.get("Code") == "ConditionalCheckFailed"}


def transact(client: Any, request: list[dict[str, Any]]) -> None:
    for attempt in range(_CONFLICT_RETRIES + 1):
        try:
            with clients.translated("The data store"):
                client.transact_write_items(TransactItems=request, ClientRequestToken=uuid.uuid4().hex)
            return
        except ClientError as exc:
            if clients.error_code(exc) != "TransactionCanceledException":
                raise
            reasons: list[Any] = list(exc.response.get("CancellationReasons") or [])
            codes = {str(r.get("Code")) for r in reasons}
            if "ConditionalCheckFailed" in codes:
                raise ConditionsFailed(reasons) from exc
            if codes & _THROTTLE_REASONS or attempt == _CONFLICT_RETRIES:
                raise ServiceUnavailable("The data store is busy; retry shortly", headers={"Retry-After": "1"}) from exc
            if "TransactionConflict" not in codes:
                raise
            time.sleep(random.uniform(0.005, 0.02) * (2**attempt))  # noqa: S311 (jitter, not crypto)


def transact_tolerant(client: Any, request: list[dict[str, Any]]) -> None:
    pending = request
    while pending:
        try:
            transact(client, pending)
            return
        except ConditionsFailed as failed:
            dropped = failed.failed()
            pending = [item for i, item in enumerate(pending) if i not in dropped]


def batch_delete(client: Any, table: str, keys: list[items.Item]) -> None:
    for chunk in chunks(keys, _BATCH_WRITE_LIMIT):
        pending: dict[str, Any] | None = {table: [{"DeleteRequest": {"Key": k}} for k in chunk]}
        attempt = 0
        while pending:
            with clients.translated("The data store"):
                reply = client.batch_write_item(RequestItems=pending)
            pending = reply.get("UnprocessedItems") or None
            if pending:
                attempt += 1
                if attempt > 8:
                    raise ServiceUnavailable("The data store is busy; retry shortly", headers={"Retry-After": "1"})
                time.sleep(min(0.05 * 2**attempt, 1.0))


def chunks(values: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def first_conflict(reasons: list[dict[str, Any]], owners: list[int]) -> tuple[int, int | None, items.Item] | None:
    """The earliest change whose condition failed, the current version where DynamoDB told it,
    and the item as it was (empty when DynamoDB did not return it)."""
    found: tuple[int, int | None, items.Item] | None = None
    for position, reason in enumerate(reasons):
        if reason.get("Code") != "ConditionalCheckFailed" or position >= len(owners):
            continue
        old = reason.get("Item") or {}
        current = int(old[items.VERSION]["N"]) if items.VERSION in old else None
        if found is None or owners[position] < found[0]:
            found = (owners[position], current, old)
    return found
