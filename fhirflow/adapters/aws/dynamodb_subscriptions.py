"""The subscriptions state store (fhirflow.subscription_ports) and delivery log on DynamoDB.

A table of its own (docs/subscriptions.md, "AWS"), keyed ``pk``/``sk``, with TTL on ``expires``:

- ``pk = s#{tenant}#{id}`` holds one subscription's items: ``sk = state`` (spec, status, error, the
  event counter ``events``, ``last_sent_ms``), ``secrets#{version:012d}`` (headers, signing secrets,
  owner), ``event#{number:012d}`` (the event log, expiring) and ``source#{event id}`` (which number a
  source event got, expiring with it);
- ``pk = d#{tenant}/{id}`` (the delivery group) holds the delivery log, ``sk = a#{at_ms:015d}#{job}``,
  expiring after the delivery-log retention;
- ``pk = c#{name}`` is a consumer cursor; ``pk = p#events`` the prune watermark.

No Scan anywhere: the state items carry ``lk``/``lsk`` (a constant and ``tenant#id``), the keys of
the sparse KEYS_ONLY index ``listing`` that :meth:`states` queries; the counter updates do not touch
the index (its projection has no changing attribute), so its single partition sees writes only when
a subscription is created or forgotten.

Event numbers: a read of the counter, then one transaction of ``ADD events :one`` conditioned on the
value read, the ``source#`` claim (conditioned on not existing) and the event item. The number is
gapless (the counter moves only with its event) and a replayed source event keeps its number (the
claim exists). Two writers of one subscription at once: one condition fails and that writer retries.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from botocore.exceptions import ClientError

from fhirflow.adapters.aws import clients
from fhirflow.adapters.aws.items import escape_tenant
from fhirflow.subscription_ports import (
    LoggedNotificationEvent,
    Secrets,
    SubscriptionMetrics,
    SubscriptionState,
    pairs,
)

LISTING_INDEX = "listing"
LISTED = "subscription"
TTL_ATTRIBUTE = "expires"
_WHAT = "The subscriptions table"
_MAX_VERSION = 10**12 - 1
GENERATION_KEY = {"pk": {"S": "g#subscriptions"}, "sk": {"S": "generation"}}
"""The subscription list's generation and pending writes (one item: a strongly consistent read)."""


def subscriptions_table(name: str) -> dict[str, Any]:
    """The CreateTable request (the CDK construct declares the same table)."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "lk", "AttributeType": "S"},
            {"AttributeName": "lsk", "AttributeType": "S"},
        ],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": LISTING_INDEX,
                "KeySchema": [{"AttributeName": "lk", "KeyType": "HASH"}, {"AttributeName": "lsk", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    }


def ensure_subscriptions_table(client: Any, name: str, *, timeout: float = 30.0) -> None:
    """Create the table (DynamoDB Local, tests) if it does not exist, and turn on its TTL."""
    try:
        client.create_table(**subscriptions_table(name))
    except ClientError as exc:
        if clients.error_code(exc) != "ResourceInUseException":
            raise
        return
    deadline = time.monotonic() + timeout
    while client.describe_table(TableName=name)["Table"]["TableStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise TimeoutError(f"DynamoDB table {name} did not become active within {timeout}s")
        time.sleep(0.1)
    client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )


def _pk(tenant: str, id_: str) -> str:
    return f"s#{escape_tenant(tenant)}#{id_}"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


class DynamoDbSubscriptionState:
    """:class:`fhirflow.subscription_ports.SubscriptionStateStore` on DynamoDB."""

    def __init__(
        self,
        table: str,
        *,
        event_retention_seconds: int = 7 * 24 * 3600,
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        clock: Any = time.time,
    ) -> None:
        self.table = table
        self.event_retention_seconds = event_retention_seconds
        self.client = client or clients.lazy_client("dynamodb", endpoint_url=endpoint_url, region=region)
        self.clock = clock

    # -- secrets ------------------------------------------------------------------------------

    def put_secrets(self, tenant: str, id_: str, secrets: Secrets) -> None:
        item = {
            "pk": _s(_pk(tenant, id_)),
            "sk": _s(f"secrets#{secrets.version:012d}"),
            "headers": _s(json.dumps(secrets.headers)),
            "signing": _s(json.dumps(secrets.signing)),
            "owner": _s(json.dumps(secrets.owner)),
            "version": _n(secrets.version),
        }
        with clients.translated(_WHAT):
            self.client.put_item(TableName=self.table, Item=item)

    def secrets(self, tenant: str, id_: str, version: int | None = None) -> Secrets | None:
        upto = min(version if version is not None else _MAX_VERSION, _MAX_VERSION)
        with clients.translated(_WHAT):
            reply = self.client.query(
                TableName=self.table,
                KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                ExpressionAttributeValues={
                    ":pk": _s(_pk(tenant, id_)),
                    ":lo": _s("secrets#"),
                    ":hi": _s(f"secrets#{upto:012d}"),
                },
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
            )
        found = reply.get("Items", [])
        if not found:
            return None
        item = found[0]
        return Secrets(
            int(item["version"]["N"]),
            pairs(json.loads(item["headers"]["S"])),
            pairs(json.loads(item["signing"]["S"])),
            json.loads(item["owner"]["S"]),
        )

    def copy_secrets(self, tenant: str, id_: str, from_version: int, to_version: int) -> None:
        found = self.secrets(tenant, id_, from_version)
        if found is not None:
            self.put_secrets(tenant, id_, Secrets(to_version, found.headers, found.signing, found.owner))

    # -- which subscriptions exist (the matchers' cached list) --------------------------------

    def note_write(self, tenant: str, id_: str, version: int, at_ms: int) -> None:
        """A client write of a Subscription is about to commit: bump the list generation and name it
        as pending, in one item every matcher batch reads with one strongly consistent GetItem (a
        GSI would be eventually consistent). Written before the commit, so a matcher that handles
        any change committed after it finds the pending write (docs/subscriptions.md, Index freshness)."""
        entry = json.dumps([tenant, id_, version, at_ms])
        with clients.translated(_WHAT):
            self.client.update_item(
                TableName=self.table,
                Key=GENERATION_KEY,
                UpdateExpression="ADD n :one, pending :entry",
                ExpressionAttributeValues={":one": _n(1), ":entry": {"SS": [entry]}},
            )

    def generation(self) -> tuple[int, list[tuple[str, str, int, int]]]:
        """The list generation and the pending writes (tenant, id, version, noted at ms)."""
        with clients.translated(_WHAT):
            reply = self.client.get_item(TableName=self.table, Key=GENERATION_KEY, ConsistentRead=True)
        item = reply.get("Item") or {}
        pending = [json.loads(e) for e in item.get("pending", {}).get("SS", [])]
        return (int(item["n"]["N"]) if "n" in item else 0), [(str(t), str(i), int(v), int(a)) for t, i, v, a in pending]

    def bump_generation(self) -> None:
        with clients.translated(_WHAT):
            self.client.update_item(
                TableName=self.table,
                Key=GENERATION_KEY,
                UpdateExpression="ADD n :one",
                ExpressionAttributeValues={":one": _n(1)},
            )

    def settle(self, tenant: str, id_: str, version: int, at_ms: int) -> None:
        """The pending write was loaded (or never committed): take it off the pending set."""
        entry = json.dumps([tenant, id_, version, at_ms])
        with clients.translated(_WHAT):
            self.client.update_item(
                TableName=self.table,
                Key=GENERATION_KEY,
                UpdateExpression="DELETE pending :entry",
                ExpressionAttributeValues={":entry": {"SS": [entry]}},
            )

    # -- state --------------------------------------------------------------------------------

    def put_state(self, tenant: str, id_: str, *, version: int, spec: dict[str, Any], status: str) -> None:
        with clients.translated(_WHAT):
            self.client.update_item(
                TableName=self.table,
                Key={"pk": _s(_pk(tenant, id_)), "sk": _s("state")},
                UpdateExpression=(
                    "SET #tenant = :tenant, sid = :id, #version = :version, #spec = :spec, #status = :status, "
                    "lk = :lk, lsk = :lsk, #events = if_not_exists(#events, :zero), "
                    "last_sent_ms = if_not_exists(last_sent_ms, :zero)"
                ),
                ExpressionAttributeNames={
                    "#status": "status",
                    "#tenant": "tenant",
                    "#version": "version",
                    "#spec": "spec",
                    "#events": "events",
                },
                ExpressionAttributeValues={
                    ":tenant": _s(tenant),
                    ":id": _s(id_),
                    ":version": _n(version),
                    ":spec": _s(json.dumps(spec)),
                    ":status": _s(status),
                    ":lk": _s(LISTED),
                    ":lsk": _s(f"{escape_tenant(tenant)}#{id_}"),
                    ":zero": _n(0),
                },
            )

    def state(self, tenant: str, id_: str) -> SubscriptionState | None:
        with clients.translated(_WHAT):
            reply = self.client.get_item(
                TableName=self.table, Key={"pk": _s(_pk(tenant, id_)), "sk": _s("state")}, ConsistentRead=True
            )
        item = reply.get("Item")
        return _state(item) if item else None

    def states(self) -> list[SubscriptionState]:
        keys: list[dict[str, Any]] = []
        paginator = self.client.get_paginator("query")
        with clients.translated(_WHAT):
            for page in paginator.paginate(
                TableName=self.table,
                IndexName=LISTING_INDEX,
                KeyConditionExpression="lk = :lk",
                ExpressionAttributeValues={":lk": _s(LISTED)},
            ):
                keys.extend({"pk": item["pk"], "sk": item["sk"]} for item in page.get("Items", []))
        out: list[SubscriptionState] = []
        for start in range(0, len(keys), 100):
            pending: dict[str, Any] = {self.table: {"Keys": keys[start : start + 100], "ConsistentRead": True}}
            for attempt in range(10):
                with clients.translated(_WHAT):
                    reply = self.client.batch_get_item(RequestItems=pending)
                out.extend(_state(item) for item in reply.get("Responses", {}).get(self.table, []))
                pending = reply.get("UnprocessedKeys") or {}
                if not pending:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
        return out

    def set_status(self, tenant: str, id_: str, status: str, error: str | None) -> None:
        names = {"#status": "status"}
        values: dict[str, Any] = {":status": _s(status)}
        if error is None:
            expression = "SET #status = :status REMOVE #error"
        else:
            expression = "SET #status = :status, #error = :error"
            values[":error"] = _s(error)
        names["#error"] = "error"
        try:
            with clients.translated(_WHAT):
                self.client.update_item(
                    TableName=self.table,
                    Key={"pk": _s(_pk(tenant, id_)), "sk": _s("state")},
                    UpdateExpression=expression,
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
        except ClientError as exc:
            if clients.error_code(exc) != "ConditionalCheckFailedException":
                raise

    def forget(self, tenant: str, id_: str) -> None:
        keys: list[dict[str, Any]] = []
        paginator = self.client.get_paginator("query")
        with clients.translated(_WHAT):
            for page in paginator.paginate(
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": _s(_pk(tenant, id_))},
                ProjectionExpression="pk, sk",
            ):
                keys.extend(page.get("Items", []))
        self._delete(keys)

    def _delete(self, keys: list[dict[str, Any]]) -> None:
        for start in range(0, len(keys), 25):
            pending: dict[str, Any] = {
                self.table: [{"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]]
            }
            for attempt in range(10):
                with clients.translated(_WHAT):
                    reply = self.client.batch_write_item(RequestItems=pending)
                pending = reply.get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))

    # -- events -------------------------------------------------------------------------------

    def record_event(
        self, tenant: str, id_: str, *, source: str, at_ms: int, focus: tuple[str, str, int], operation: str
    ) -> tuple[int, bool]:
        pk = _pk(tenant, id_)
        expires = _n(int(max(at_ms / 1000, self.clock())) + self.event_retention_seconds)
        for attempt in range(1000):
            claimed = self._claimed(pk, source)
            if claimed is not None:
                return claimed, False
            current = self.state(tenant, id_)
            if current is None:
                raise LookupError(f"no state for subscription {tenant}/{id_}")
            number = current.events + 1
            try:
                with clients.translated(_WHAT):
                    self.client.transact_write_items(
                        TransactItems=[
                            {
                                "Update": {
                                    "TableName": self.table,
                                    "Key": {"pk": _s(pk), "sk": _s("state")},
                                    "UpdateExpression": "ADD #events :one",
                                    "ConditionExpression": "#events = :seen",
                                    "ExpressionAttributeNames": {"#events": "events"},
                                    "ExpressionAttributeValues": {":one": _n(1), ":seen": _n(current.events)},
                                }
                            },
                            {
                                "Put": {
                                    "TableName": self.table,
                                    "Item": {
                                        "pk": _s(pk),
                                        "sk": _s(f"source#{source}"),
                                        "number": _n(number),
                                        TTL_ATTRIBUTE: expires,
                                    },
                                    "ConditionExpression": "attribute_not_exists(pk)",
                                }
                            },
                            {
                                "Put": {
                                    "TableName": self.table,
                                    "Item": {
                                        "pk": _s(pk),
                                        "sk": _s(f"event#{number:012d}"),
                                        "number": _n(number),
                                        "at_ms": _n(at_ms),
                                        "focus_type": _s(focus[0]),
                                        "focus_id": _s(focus[1]),
                                        "focus_version": _n(focus[2]),
                                        "operation": _s(operation),
                                        TTL_ATTRIBUTE: expires,
                                    },
                                }
                            },
                        ]
                    )
            except ClientError as exc:
                if clients.error_code(exc) not in ("TransactionCanceledException", "TransactionConflictException"):
                    raise
                time.sleep(random.uniform(0, min(0.002 * 2 ** min(attempt, 6), 0.1)))  # noqa: S311 - jitter only
                continue
            return number, True
        raise RuntimeError(f"could not number an event of subscription {tenant}/{id_}")

    def _claimed(self, pk: str, source: str) -> int | None:
        with clients.translated(_WHAT):
            reply = self.client.get_item(
                TableName=self.table, Key={"pk": _s(pk), "sk": _s(f"source#{source}")}, ConsistentRead=True
            )
        item = reply.get("Item")
        return int(item["number"]["N"]) if item else None

    def events(self, tenant: str, id_: str, *, since: int, until: int, limit: int) -> list[LoggedNotificationEvent]:
        if until < since or limit <= 0:
            return []
        watermark = self._watermark()
        out: list[LoggedNotificationEvent] = []
        paginator = self.client.get_paginator("query")
        with clients.translated(_WHAT):
            for page in paginator.paginate(
                TableName=self.table,
                KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                FilterExpression="at_ms >= :watermark",
                ExpressionAttributeValues={
                    ":pk": _s(_pk(tenant, id_)),
                    ":lo": _s(f"event#{max(since, 0):012d}"),
                    ":hi": _s(f"event#{min(until, _MAX_VERSION):012d}"),
                    ":watermark": _n(watermark),
                },
                ConsistentRead=True,
            ):
                for item in page.get("Items", []):
                    out.append(
                        LoggedNotificationEvent(
                            int(item["number"]["N"]),
                            int(item["at_ms"]["N"]),
                            item["focus_type"]["S"],
                            item["focus_id"]["S"],
                            int(item["focus_version"]["N"]),
                            item["operation"]["S"],
                        )
                    )
                    if len(out) >= limit:
                        return out
        return out

    def mark_sent(self, tenant: str, id_: str, at_ms: int) -> None:
        try:
            with clients.translated(_WHAT):
                self.client.update_item(
                    TableName=self.table,
                    Key={"pk": _s(_pk(tenant, id_)), "sk": _s("state")},
                    UpdateExpression="SET last_sent_ms = :at",
                    ConditionExpression="attribute_exists(pk) AND last_sent_ms < :at",
                    ExpressionAttributeValues={":at": _n(at_ms)},
                )
        except ClientError as exc:
            if clients.error_code(exc) != "ConditionalCheckFailedException":
                raise

    # -- metrics ------------------------------------------------------------------------------

    def count(
        self,
        tenant: str,
        id_: str,
        *,
        matched: int = 0,
        delivered: int = 0,
        failed: int = 0,
        latency_ms: float | None = None,
    ) -> None:
        """One UpdateItem of ``sk = metrics``: ADD is atomic, so concurrent deliverers lose no count."""
        expression = "ADD matched :m, delivered :d, failed :f"
        values: dict[str, Any] = {":m": _n(matched), ":d": _n(delivered), ":f": _n(failed)}
        if latency_ms is not None:
            expression += " SET last_latency_ms = :l"
            values[":l"] = {"N": repr(round(float(latency_ms), 3))}
        with clients.translated(_WHAT):
            self.client.update_item(
                TableName=self.table,
                Key={"pk": _s(_pk(tenant, id_)), "sk": _s("metrics")},
                UpdateExpression=expression,
                ExpressionAttributeValues=values,
            )

    def metrics(self, tenant: str, id_: str) -> SubscriptionMetrics:
        with clients.translated(_WHAT):
            item = self.client.get_item(
                TableName=self.table, Key={"pk": _s(_pk(tenant, id_)), "sk": _s("metrics")}, ConsistentRead=True
            ).get("Item")
        if not item:
            return SubscriptionMetrics()
        latency = item.get("last_latency_ms")
        return SubscriptionMetrics(
            int(item.get("matched", {}).get("N", "0")),
            int(item.get("delivered", {}).get("N", "0")),
            int(item.get("failed", {}).get("N", "0")),
            float(latency["N"]) if latency else None,
        )

    # -- the consumer's position --------------------------------------------------------------

    def cursor(self, name: str) -> int:
        with clients.translated(_WHAT):
            reply = self.client.get_item(
                TableName=self.table, Key={"pk": _s(f"c#{name}"), "sk": _s("cursor")}, ConsistentRead=True
            )
        item = reply.get("Item")
        return int(item["seq"]["N"]) if item else 0

    def advance(self, name: str, seq: int) -> None:
        with clients.translated(_WHAT):
            self.client.put_item(TableName=self.table, Item={"pk": _s(f"c#{name}"), "sk": _s("cursor"), "seq": _n(seq)})

    def prune(self, *, events_older_than_ms: int) -> int:
        """Events expire by TTL (``expires``, set from the event-log retention when recorded); TTL
        deletes lazily, so this raises a watermark below which :meth:`events` shows nothing.
        Returns 0: without a Scan the number of items that fell below it is not known."""
        try:
            with clients.translated(_WHAT):
                self.client.update_item(
                    TableName=self.table,
                    Key={"pk": _s("p#events"), "sk": _s("watermark")},
                    UpdateExpression="SET before_ms = :before",
                    ConditionExpression="attribute_not_exists(before_ms) OR before_ms < :before",
                    ExpressionAttributeValues={":before": _n(events_older_than_ms)},
                )
        except ClientError as exc:
            if clients.error_code(exc) != "ConditionalCheckFailedException":
                raise
        return 0

    def _watermark(self) -> int:
        with clients.translated(_WHAT):
            reply = self.client.get_item(TableName=self.table, Key={"pk": _s("p#events"), "sk": _s("watermark")})
        item = reply.get("Item")
        return int(item["before_ms"]["N"]) if item else 0


def _state(item: dict[str, Any]) -> SubscriptionState:
    error = item.get("error")
    return SubscriptionState(
        item["tenant"]["S"],
        item["sid"]["S"],
        int(item["version"]["N"]),
        json.loads(item["spec"]["S"]),
        item["status"]["S"],
        error["S"] if error else None,
        int(item["events"]["N"]),
        int(item["last_sent_ms"]["N"]),
    )


class DynamoDbDeliveryLog:
    """The delivery log of the AWS deliverer (time, status, latency, error per attempt; never
    bodies), for ``$status``; each entry expires after the delivery-log retention (TTL)."""

    def __init__(
        self,
        table: str,
        *,
        retention_seconds: int = 7 * 24 * 3600,
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        self.table = table
        self.retention_seconds = retention_seconds
        self.client = client or clients.lazy_client("dynamodb", endpoint_url=endpoint_url, region=region)

    def log_attempt(self, group: str, job_id: str, attempt: Any, at_ms: int) -> None:
        item: dict[str, Any] = {
            "pk": _s(f"d#{group}"),
            "sk": _s(f"a#{at_ms:015d}#{job_id}"),
            "job": _s(job_id),
            "at_ms": _n(at_ms),
            "outcome": _s(attempt.outcome),
            "latency_ms": {"N": str(round(float(attempt.latency_ms), 1))},
            TTL_ATTRIBUTE: _n(at_ms // 1000 + self.retention_seconds),
        }
        if attempt.status is not None:
            item["status"] = _n(int(attempt.status))
        if attempt.error:
            item["error"] = _s(str(attempt.error)[:500])
        with clients.translated(_WHAT):
            self.client.put_item(TableName=self.table, Item=item)

    def attempts(self, group: str, *, limit: int = 20) -> list[dict[str, Any]]:
        with clients.translated(_WHAT):
            reply = self.client.query(
                TableName=self.table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :a)",
                ExpressionAttributeValues={":pk": _s(f"d#{group}"), ":a": _s("a#")},
                ScanIndexForward=False,
                Limit=limit,
            )
        return [
            {
                "job_id": item["job"]["S"],
                "at_ms": int(item["at_ms"]["N"]),
                "outcome": item["outcome"]["S"],
                "status": int(item["status"]["N"]) if "status" in item else None,
                "latency_ms": float(item["latency_ms"]["N"]),
                "error": item["error"]["S"] if "error" in item else None,
            }
            for item in reply.get("Items", [])
        ]
