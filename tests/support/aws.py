"""Fixtures for the AWS adapters: DynamoDB Local tables and moto (S3, EventBridge, SQS)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.dynamodb_local import CREDENTIALS, DynamoDbLocal


@dataclass(frozen=True)
class Tables:
    client: Any
    resources: str
    ledger: str
    endpoint: str


def create_tables(local: DynamoDbLocal) -> Tables:
    from fhirflow.adapters.aws.schema import ensure_tables

    client = local.client()
    suffix = uuid.uuid4().hex[:10]
    tables = Tables(client, f"fhirflow-{suffix}", f"fhirflow-{suffix}-ledger", local.endpoint)
    ensure_tables(client, tables.resources, tables.ledger)
    return tables


@pytest.fixture(scope="session")
def shared_tables(dynamodb_local: DynamoDbLocal) -> Tables:
    """One pair of tables per worker; tests keep apart by using their own tenant."""
    return create_tables(dynamodb_local)


@pytest.fixture
def fresh_tables(dynamodb_local: DynamoDbLocal) -> Iterator[Tables]:
    """Tables of the test's own, for tests that read the whole stream."""
    tables = create_tables(dynamodb_local)
    yield tables
    for name in (tables.resources, tables.ledger):
        tables.client.delete_table(TableName=name)


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@dataclass
class Moto:
    """moto's in-process AWS; DynamoDB Local's endpoint passes through it untouched."""

    region: str = "us-east-1"

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name=self.region)

    def bucket(self) -> str:
        name = f"fhirflow-blobs-{uuid.uuid4().hex[:8]}"
        self.client("s3").create_bucket(Bucket=name)
        return name

    def bus_to_queue(self) -> tuple[str, str]:
        """An event bus whose rule sends fhirflow ResourceChanged events to an SQS queue."""
        events, sqs = self.client("events"), self.client("sqs")
        suffix = uuid.uuid4().hex[:8]
        bus = f"fhirflow-{suffix}"
        events.create_event_bus(Name=bus)
        queue_url = sqs.create_queue(QueueName=f"changes-{suffix}")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(
            Name=f"changes-{suffix}",
            EventBusName=bus,
            EventPattern=json.dumps({"source": ["fhirflow"], "detail-type": ["ResourceChanged"]}),
        )
        events.put_targets(Rule=f"changes-{suffix}", EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}])
        return bus, queue_url

    def drain_queue(self, queue_url: str) -> list[dict[str, Any]]:
        """Every EventBridge envelope in the queue (removing them)."""
        sqs = self.client("sqs")
        envelopes: list[dict[str, Any]] = []
        while True:
            reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
            messages = reply.get("Messages", [])
            if not messages:
                return envelopes
            for message in messages:
                envelopes.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def moto() -> Iterator[Moto]:
    from moto import mock_aws

    for name, value in CREDENTIALS.items():
        os.environ.setdefault(name, value)
    with mock_aws():
        yield Moto()
