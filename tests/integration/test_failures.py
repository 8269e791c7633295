"""Failures of DynamoDB and S3 reach the client as 503 + Retry-After (retryable) or 500 (not),
always with an OperationOutcome, and never leave a half-written resource.

Faults are injected into the boto3 client's own event hooks (``before-call``), so everything
else — the adapter, the use case, the real DynamoDB Local behind them — is the production path.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from fhirflow.adapters.aws.dynamodb_store import DynamoDbResourceStore
from fhirflow.adapters.aws.s3_blobs import S3BlobStore
from fhirflow.ports import HistoryQuery
from fhirflow.runtime import build_dependencies
from fhirflow.settings import Settings
from fhirflow_crud.app import build_app
from tests.support.lambda_http import Reply, call

PATIENT = {"resourceType": "Patient", "active": True}


def inject(
    client: Any, operation: str, code: str, *, status: int = 400, reasons: list[dict[str, Any]] | None = None
) -> Callable[[], None]:
    """Make every call of ``operation`` fail with ``code``; returns the undo."""

    def fail(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        body: dict[str, Any] = {"Error": {"Code": code, "Message": "injected by the test"}}
        if reasons is not None:
            body["CancellationReasons"] = reasons
        return AWSResponse("https://dynamodb.test", status, {}, None), body

    event = f"before-call.{client.meta.service_model.service_id.hyphenize()}.{operation}"
    client.meta.events.register(event, fail, unique_id=f"fault-{operation}")
    return lambda: client.meta.events.unregister(event, unique_id=f"fault-{operation}")


@dataclasses.dataclass
class World:
    crud: Any
    store: DynamoDbResourceStore
    s3: Any
    bucket: str
    tenant: str
    settings: Settings


@pytest.fixture
def world(shared_tables, dynamodb_local, moto, tmp_path, tenant) -> World:
    bucket = moto.bucket()
    settings = Settings(
        store="dynamodb",
        data_dir=tmp_path,
        dynamodb_table=shared_tables.resources,
        dynamodb_ledger_table=shared_tables.ledger,
        dynamodb_endpoint=shared_tables.endpoint,
        blob_bucket=bucket,
    )
    s3 = moto.client("s3")
    # Clients of the test's own, so that injected faults touch nothing else.
    store = DynamoDbResourceStore(
        shared_tables.resources, client=dynamodb_local.client(), blobs=S3BlobStore(bucket, client=s3)
    )
    crud = build_app(dataclasses.replace(build_dependencies(settings), store=store))
    return World(crud, store, s3, bucket, tenant, settings)


def assert_outcome(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply.body[:300]
    outcome = reply.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code


def nothing_written(world: World) -> bool:
    return world.store.history(HistoryQuery(world.tenant)).versions == []


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError"]
)
def test_throttled_or_failing_writes_are_503_with_retry_after(world: World, code: str) -> None:
    undo = inject(world.store.client, "TransactWriteItems", code, status=500 if code == "InternalServerError" else 400)
    reply = call(world.crud, "POST", f"/tenant/{world.tenant}/Patient", PATIENT)
    assert_outcome(reply, 503, "transient")
    assert reply.headers["retry-after"] == "1"
    assert nothing_written(world)
    undo()
    assert call(world.crud, "POST", f"/tenant/{world.tenant}/Patient", PATIENT).status == 201


def test_a_transaction_cancelled_by_throttling_is_503(world: World) -> None:
    crud, store, tenant = world.crud, world.store, world.tenant
    created = call(crud, "POST", f"/tenant/{tenant}/Patient", PATIENT).json()
    undo = inject(
        store.client,
        "TransactWriteItems",
        "TransactionCanceledException",
        reasons=[{"Code": "ThrottlingError", "Message": "throughput"}, {"Code": "None"}],
    )
    reply = call(
        crud,
        "PUT",
        f"/tenant/{tenant}/Patient/{created['id']}",
        {**PATIENT, "id": created["id"], "gender": "other"},  # a change: an unchanged PUT writes nothing
        headers={"if-match": 'W/"1"'},
    )
    undo()
    assert_outcome(reply, 503, "transient")
    assert reply.headers["retry-after"] == "1"
    assert store.current(tenant, "Patient", created["id"]).version == 1
    assert len(store.history(HistoryQuery(tenant, "Patient", created["id"])).versions) == 1


def test_throttled_reads_are_503(world: World) -> None:
    crud, store, tenant = world.crud, world.store, world.tenant
    created = call(crud, "POST", f"/tenant/{tenant}/Patient", PATIENT).json()
    undo = inject(store.client, "GetItem", "ProvisionedThroughputExceededException")
    reply = call(crud, "GET", f"/tenant/{tenant}/Patient/{created['id']}")
    undo()
    assert_outcome(reply, 503, "transient")
    assert reply.headers["retry-after"] == "1"


def test_a_missing_table_is_a_500_that_reveals_nothing(world: World, dynamodb_local) -> None:
    store = DynamoDbResourceStore("no-such-table", client=dynamodb_local.client())
    crud = build_app(dataclasses.replace(build_dependencies(world.settings), store=store))
    reply = call(crud, "POST", f"/tenant/{world.tenant}/Patient", PATIENT)
    assert_outcome(reply, 500, "exception")
    assert "no-such-table" not in reply.body.decode()
    assert "retry-after" not in reply.headers


def test_a_failed_blob_upload_writes_no_resource(world: World) -> None:
    undo = inject(world.s3, "PutObject", "SlowDown", status=503)
    reply = call(
        world.crud,
        "POST",
        f"/tenant/{world.tenant}/Binary",
        {"resourceType": "Binary", "contentType": "text/plain", "data": "QUJD" * 50_000},
    )
    undo()
    assert_outcome(reply, 503, "transient")
    assert nothing_written(world)
    assert world.s3.list_objects_v2(Bucket=world.bucket).get("KeyCount", 0) == 0


def test_a_failed_transaction_removes_the_blob_it_uploaded(world: World) -> None:
    undo = inject(world.store.client, "TransactWriteItems", "ThrottlingException")
    reply = call(
        world.crud,
        "POST",
        f"/tenant/{world.tenant}/Binary",
        {"resourceType": "Binary", "contentType": "text/plain", "data": "QUJD" * 50_000},
    )
    undo()
    assert_outcome(reply, 503, "transient")
    assert nothing_written(world)
    assert world.s3.list_objects_v2(Bucket=world.bucket).get("KeyCount", 0) == 0


def test_a_transaction_conflict_is_retried_then_commits(world: World) -> None:
    calls: list[str] = []

    def conflict_once(**kwargs: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        calls.append(json.loads(kwargs["params"]["body"])["ClientRequestToken"])  # the serialised request
        if len(calls) > 1:
            return None  # let the call through to DynamoDB Local
        body = {
            "Error": {"Code": "TransactionCanceledException", "Message": "injected"},
            "CancellationReasons": [{"Code": "TransactionConflict"}, {"Code": "None"}],
        }
        return AWSResponse("https://dynamodb.test", 400, {}, None), body

    world.store.client.meta.events.register("before-call.dynamodb.TransactWriteItems", conflict_once)
    reply = call(world.crud, "POST", f"/tenant/{world.tenant}/Patient", PATIENT)
    assert reply.status == 201, reply.body[:300]
    assert len(calls) == 2
    assert calls[0] != calls[1]  # a cancelled attempt committed nothing: the retry is a new request
    assert len(world.store.history(HistoryQuery(world.tenant)).versions) == 1
