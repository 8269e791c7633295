"""The AWS write path end to end: crud handler on DynamoDB Local → the table's real stream →
index-sync's Lambda handler → the search index and EventBridge (moto) → an SQS queue via a rule.

Also the replay properties: the same stream batch processed twice, and batches processed out of
order, leave the index and the event count correct.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from fhirflow import runtime
from fhirflow.adapters.aws import items
from fhirflow.adapters.aws.dynamodb_streams import DynamoDbStreamReader
from fhirflow.adapters.sqlite.index import SqliteSearchIndex
from fhirflow.local.gateway import LambdaContext
from fhirflow.runtime import build_dependencies
from fhirflow.settings import Settings
from fhirflow_contracts import ResourceChanged
from fhirflow_crud.app import build_app
from fhirflow_index_sync import app as index_sync
from fhirflow_index_sync.handler import lambda_handler
from tests.support.lambda_http import Reply, call


@dataclass
class Flow:
    settings: Settings
    crud: Any
    queue: str
    moto: Any
    tenant: str

    def write(self, method: str, path: str, body: dict[str, Any] | None = None, **headers: str) -> Reply:
        reply = call(self.crud, method, f"/tenant/{self.tenant}{path}", body or b"", headers=headers)
        assert reply.status < 300, reply.body[:500]
        return reply

    def stream(self) -> list[dict[str, Any]]:
        reader = DynamoDbStreamReader(
            self.settings.dynamodb_table, endpoint_url=self.settings.dynamodb_endpoint, region="us-east-1"
        )
        return list(reader.records())

    def sync(self, records: list[dict[str, Any]]) -> list[str]:
        response = lambda_handler({"Records": records}, LambdaContext("fhirflow-index-sync", "it"))
        return [f["itemIdentifier"] for f in response["batchItemFailures"]]

    def events(self) -> list[ResourceChanged]:
        envelopes = self.moto.drain_queue(self.queue)
        assert {(e["source"], e["detail-type"]) for e in envelopes} <= {("fhirflow", "ResourceChanged")}
        return [ResourceChanged.model_validate(e["detail"]) for e in envelopes]

    @property
    def index(self) -> SqliteSearchIndex:
        return SqliteSearchIndex(runtime.sqlite_database(self.settings))


@pytest.fixture
def flow(fresh_tables, moto, tmp_path, tenant) -> Any:
    bus, queue = moto.bus_to_queue()
    settings = Settings(
        store="dynamodb",
        data_dir=tmp_path,
        dynamodb_table=fresh_tables.resources,
        dynamodb_ledger_table=fresh_tables.ledger,
        dynamodb_endpoint=fresh_tables.endpoint,
        blob_bucket=moto.bucket(),
        events="eventbridge",
        event_bus=bus,
        aws_region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    index_sync.use(index_sync.build(settings))  # index-sync's own composition root, on these settings
    yield Flow(settings, build_app(build_dependencies(settings)), queue, moto, tenant)
    index_sync.use(None)


def version_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["eventName"] == "INSERT" and items.is_version_item(r["dynamodb"]["NewImage"])]


def test_writes_reach_the_index_and_an_sqs_queue_through_eventbridge(flow: Flow) -> None:
    patient = flow.write("POST", "/Patient", {"resourceType": "Patient", "name": [{"family": "Stream"}]}).json()
    pid = patient["id"]
    updated = flow.write(
        "PUT", f"/Patient/{pid}", {"resourceType": "Patient", "id": pid, "active": True}, **{"if-match": 'W/"1"'}
    ).json()
    observation = flow.write(
        "POST", "/Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    ).json()
    flow.write("DELETE", f"/Observation/{observation['id']}")
    # Over the 64 KB threshold: its body is in S3 and the stream image carries only the key.
    big = flow.write(
        "POST", "/Binary", {"resourceType": "Binary", "contentType": "text/plain", "data": "QQ==" * 40_000}
    ).json()

    records = flow.stream()
    assert len(version_records(records)) == 5
    assert len(records) > 5  # head items are in the stream too, and must be ignored
    assert flow.sync(records) == []

    tenant = flow.tenant
    assert flow.index.document(tenant, "Patient", pid) == updated
    assert flow.index.indexed_version(tenant, "Observation", observation["id"]) == 2
    assert flow.index.document(tenant, "Observation", observation["id"]) is None
    assert flow.index.document(tenant, "Binary", big["id"]) == big

    events = flow.events()
    assert sorted((e.resource_type, e.version_id, e.operation) for e in events) == [
        ("Binary", "1", "create"),
        ("Observation", "1", "create"),
        ("Observation", "2", "delete"),
        ("Patient", "1", "create"),
        ("Patient", "2", "update"),
    ]
    assert {e.tenant for e in events} == {tenant}
    assert all(e.request_id for e in events)
    patient_events = [e for e in events if e.id == pid]
    assert [e.version_id for e in patient_events] == ["1", "2"]  # version order per resource
    assert patient_events[1].last_updated.isoformat().startswith(updated["meta"]["lastUpdated"][:19])


def test_replayed_and_reordered_batches_leave_index_and_events_correct(flow: Flow) -> None:
    # Each version differs from the one before (an update that changes nothing writes no version).
    pid = flow.write("POST", "/Patient", {"resourceType": "Patient", "active": True}).json()["id"]
    for n in range(2, 4):
        flow.write("PUT", f"/Patient/{pid}", {"resourceType": "Patient", "id": pid, "active": n % 2 == 1})
    records = flow.stream()
    by_version = {int(r["dynamodb"]["NewImage"]["v"]["N"]): r for r in version_records(records)}
    assert sorted(by_version) == [1, 2, 3]

    assert flow.sync([by_version[3]]) == []  # the newest first
    assert flow.sync([by_version[1]]) == []
    assert flow.sync([by_version[2]]) == []
    assert flow.index.indexed_version(flow.tenant, "Patient", pid) == 3
    assert flow.index.document(flow.tenant, "Patient", pid)["active"] is True

    assert flow.sync(records) == []  # the whole stream again
    assert flow.sync(records) == []  # and again
    assert flow.index.indexed_version(flow.tenant, "Patient", pid) == 3

    events = flow.events()
    assert Counter(e.version_id for e in events) == {"1": 1, "2": 1, "3": 1}
    assert len({e.metadata.event_id for e in events}) == 3
