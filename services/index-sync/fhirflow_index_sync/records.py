"""DynamoDB stream records → committed changes.

Only the INSERT of a version item records a committed change (one per change, immutable);
head updates and anything else in the stream are not changes and are skipped.

That includes a multi-batch transaction's staged versions (``s#{tx}#{version}`` items,
docs/dynamodb.md "Transactions"): they are not version items, so nothing uncommitted is ever
indexed or announced. Its version items are written only by its apply step, after the commit
point, and their INSERTs are announced like any other, once each (a repeated apply writes none).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhirflow.adapters.aws import items
from fhirflow.ports import BlobStore, CommittedChange


def change_from_record(record: dict[str, Any], blobs: BlobStore | None) -> CommittedChange | None:
    """The change a stream record (Lambda's JSON shape) reports, or None when it reports none."""
    if record.get("eventName") != "INSERT":
        return None
    image = (record.get("dynamodb") or {}).get("NewImage") or {}
    if not items.is_version_item(image):
        return None
    change, blob = items.decode_change(image)
    if blob is None:
        return change
    if blobs is None:
        raise RuntimeError("a version's body is in the blob store, but none is configured")
    return replace(change, stored=replace(change.stored, body=blobs.get(blob)))
