"""Reading a DynamoDB stream directly, as Lambda's event source mapping does in AWS.

Used where no Lambda runs: ``fhirflow serve --store dynamodb`` (the worker polls DynamoDB
Local's stream into index-sync) and the integration tests. Records are returned in the shape
of a Lambda DynamoDB Streams event, so they go through the index-sync handler unchanged.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from fhirflow.adapters.aws import clients


class DynamoDbStreamReader:
    """Follows every shard of a table's stream from the oldest record (replays are harmless:
    the consumer is idempotent). Shard positions live in memory."""

    def __init__(
        self,
        table: str,
        *,
        client: Any = None,
        dynamodb_client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        self.table = table
        self.client = client or clients.client("dynamodbstreams", endpoint_url=endpoint_url, region=region)
        self.dynamodb = dynamodb_client or clients.client("dynamodb", endpoint_url=endpoint_url, region=region)
        self.stream_arn: str | None = None
        self._iterators: dict[str, str | None] = {}

    def _arn(self) -> str:
        if self.stream_arn is None:
            table = self.dynamodb.describe_table(TableName=self.table)["Table"]
            self.stream_arn = str(table["LatestStreamArn"])
        return self.stream_arn

    def _refresh_shards(self) -> None:
        arn = self._arn()
        start: str | None = None
        while True:
            args: dict[str, Any] = {"StreamArn": arn}
            if start:
                args["ExclusiveStartShardId"] = start
            description = self.client.describe_stream(**args)["StreamDescription"]
            for shard in description["Shards"]:
                shard_id = shard["ShardId"]
                if shard_id not in self._iterators:
                    iterator = self.client.get_shard_iterator(
                        StreamArn=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                    )["ShardIterator"]
                    self._iterators[shard_id] = iterator
            start = description.get("LastEvaluatedShardId")
            if not start:
                return

    def poll(self, limit: int = 100) -> list[dict[str, Any]]:
        """The records that arrived since the last poll, oldest first per shard, as Lambda event records."""
        with clients.translated("The change stream"):
            self._refresh_shards()
            records: list[dict[str, Any]] = []
            for shard_id, iterator in list(self._iterators.items()):
                if iterator is None:
                    continue  # a closed shard, read to its end
                reply = self.client.get_records(ShardIterator=iterator, Limit=limit)
                records.extend(self._lambda_record(r) for r in reply.get("Records", []))
                self._iterators[shard_id] = reply.get("NextShardIterator")
        return records

    def records(self, *, idle_polls: int = 2, limit: int = 100) -> Iterator[dict[str, Any]]:
        """Everything currently in the stream (stops after ``idle_polls`` empty polls)."""
        idle = 0
        while idle < idle_polls:
            batch = self.poll(limit)
            idle = 0 if batch else idle + 1
            yield from batch

    def _lambda_record(self, record: dict[str, Any]) -> dict[str, Any]:
        data = dict(record["dynamodb"])
        created = data.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            data["ApproximateCreationDateTime"] = int(created.timestamp())
        for image in ("Keys", "NewImage", "OldImage"):
            if image in data:
                data[image] = {name: _lambda_value(value) for name, value in data[image].items()}
        return {
            "eventID": record.get("eventID"),
            "eventName": record.get("eventName"),
            "eventVersion": record.get("eventVersion", "1.1"),
            "eventSource": "aws:dynamodb",
            "awsRegion": record.get("awsRegion", "us-east-1"),
            "dynamodb": data,
            "eventSourceARN": self.stream_arn,
        }


def _lambda_value(value: dict[str, Any]) -> dict[str, Any]:
    """boto3 hands binary attributes over as bytes; Lambda's JSON events carry them as base64."""
    if "B" in value and isinstance(value["B"], bytes | bytearray):
        return {"B": base64.b64encode(value["B"]).decode("ascii")}
    if "BS" in value:
        return {"BS": [base64.b64encode(v).decode("ascii") for v in value["BS"]]}
    if "M" in value:
        return {"M": {k: _lambda_value(v) for k, v in value["M"].items()}}
    if "L" in value:
        return {"L": [_lambda_value(v) for v in value["L"]]}
    return value
