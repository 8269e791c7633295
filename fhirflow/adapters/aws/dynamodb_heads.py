"""``DynamoDbHeadScanner``: the current version of every live resource, by parallel Scan segment.

Rebuilding the search index (:mod:`fhirflow.index_rebuild`) needs each resource's current
version, which only its head item holds (docs/dynamodb.md: ``sk = head``). No index lists the
heads alone (a sparse GSI of heads would cost a GSI write on every write, for a rebuild that
runs rarely), so a segment of a parallel Scan (``Segment``/``TotalSegments``) is read page by
page with a ``FilterExpression`` that keeps live, committed heads: version items (history),
deletion heads, pending heads of uncommitted transactions, claims, jobs and transaction records
are dropped by DynamoDB before they are returned or decoded (they still count towards the read
capacity the Scan consumes). A ``ProjectionExpression`` returns only what indexing needs.

A head a transaction holds locked is indexed as it stands (the committed version); the
transaction's apply step writes the new version, which index-sync indexes as a newer version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhirflow.adapters.aws import clients, items
from fhirflow.ports import ResourceVersion

_PROJECTED = (
    items.TENANT,
    items.TYPE,
    items.ID,
    items.VERSION,
    items.LAST_UPDATED,
    items.DELETED,
    items.METHOD,
    items.BODY,
    items.BLOB,
    items.CREATED,
)


@dataclass(frozen=True, slots=True)
class HeadPage:
    heads: Sequence[tuple[ResourceVersion, str | None]]
    """Each live head's version and, when its body is in the blob store, the blob key."""
    last_key: dict[str, Any] | None
    """Where the next page of the segment starts (``ExclusiveStartKey``); None: the segment is done."""


class DynamoDbHeadScanner:
    def __init__(
        self,
        table: str,
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        tenant: str | None = None,
    ) -> None:
        self.table = table
        self.client = client or clients.client("dynamodb", endpoint_url=endpoint_url, region=region)
        self.tenant = tenant

    def page(self, segment: int, segments: int, start: dict[str, Any] | None, limit: int) -> HeadPage:
        """One page of ``segment`` of ``segments``: up to ``limit`` items examined (fewer heads)."""
        names = {f"#a{n}": name for n, name in enumerate(_PROJECTED)}
        names.update({"#sk": items.SK, "#d": items.DELETED, "#pn": items.PENDING, "#ty": items.TYPE})
        values: dict[str, Any] = {":head": {"S": items.HEAD}, ":false": {"BOOL": False}}
        condition = "#sk = :head AND #d = :false AND attribute_exists(#ty)"
        condition += " AND (attribute_not_exists(#pn) OR #pn = :false)"
        if self.tenant is not None:
            names["#t"] = items.TENANT
            values[":tenant"] = {"S": self.tenant}
            condition += " AND #t = :tenant"
        request: dict[str, Any] = {
            "TableName": self.table,
            "Segment": segment,
            "TotalSegments": segments,
            "Limit": limit,
            "FilterExpression": condition,
            "ProjectionExpression": ", ".join(f"#a{n}" for n in range(len(_PROJECTED))),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }
        if start is not None:
            request["ExclusiveStartKey"] = start
        with clients.translated("The resource table"):
            reply = self.client.scan(**request)
        return HeadPage([items.decode(item) for item in reply.get("Items", [])], reply.get("LastEvaluatedKey"))
