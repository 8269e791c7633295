"""Subscriptions on AWS end to end: crud handler on DynamoDB Local → stream → index-sync → EventBridge
(moto) → SQS → the matcher Lambda handler → an SQS FIFO queue (moto) → the deliverer Lambda handler →
a webhook receiver on 127.0.0.1, its signature verified with ``standardwebhooks`` (issue 12, AWS).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from fhirflow.adapters.aws.dynamodb_streams import DynamoDbStreamReader
from fhirflow.adapters.aws.dynamodb_subscriptions import ensure_subscriptions_table
from fhirflow.local.gateway import LambdaContext
from fhirflow.runtime import build_dependencies
from fhirflow.settings import Settings
from fhirflow_crud.app import build_app
from fhirflow_index_sync import app as index_sync
from fhirflow_index_sync.handler import lambda_handler as sync_handler
from fhirflow_subscriptions import aws
from tests.support.lambda_http import Reply, call
from tests.support.webhook_receiver import Receiver
from tests.support.webhook_receiver import Reply as Answer

SECRET_EXT = "https://fhirflow.dev/fhir/StructureDefinition/subscription-signing-secret"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"


@dataclass
class Flow:
    settings: Settings
    crud: Any
    changes: str
    fifo: str
    moto: Any
    tenant: str
    synced: int = 0

    def write(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply: Reply = call(self.crud, method, f"/tenant/{self.tenant}{path}", body)
        assert reply.status < 300, reply.body[:500]
        return json.loads(reply.body)

    def read(self, path: str) -> dict[str, Any]:
        reply = call(self.crud, "GET", f"/tenant/{self.tenant}{path}")
        assert reply.status == 200, reply.body[:500]
        return json.loads(reply.body)

    def sync(self) -> None:
        """The table's new stream records through index-sync onto the bus (and the changes queue)."""
        reader = DynamoDbStreamReader(
            self.settings.dynamodb_table, endpoint_url=self.settings.dynamodb_endpoint, region="us-east-1"
        )
        records = list(reader.records())[self.synced :]
        self.synced += len(records)
        if records:
            reply = sync_handler({"Records": records}, LambdaContext("fhirflow-index-sync", "it"))
            assert reply["batchItemFailures"] == []

    def match(self) -> dict[str, Any]:
        """The changes queue's messages as one SQS event to the matcher handler."""
        sqs = self.moto.client("sqs")
        records = []
        while True:
            got = sqs.receive_message(QueueUrl=self.changes, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                break
            for message in got:
                records.append({"messageId": message["MessageId"], "body": message["Body"]})
                sqs.delete_message(QueueUrl=self.changes, ReceiptHandle=message["ReceiptHandle"])
        return aws.match_handler({"Records": records}, LambdaContext("fhirflow-subscriptions-match", "it"))

    def notifications(self, visibility: int = 30) -> list[dict[str, Any]]:
        """What the deliverer's event source would hand it (FIFO: one batch, in group order)."""
        got = (
            self.moto.client("sqs")
            .receive_message(
                QueueUrl=self.fifo, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=visibility
            )
            .get("Messages", [])
        )
        return [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
            }
            for m in got
        ]

    def deliver(self, records: list[dict[str, Any]]) -> list[str]:
        reply = aws.deliver_handler({"Records": records}, LambdaContext("fhirflow-subscriptions-deliver", "it"))
        failed = [f["itemIdentifier"] for f in reply["batchItemFailures"]]
        sqs = self.moto.client("sqs")
        for record in records:  # what the event source mapping does with the others
            if record["messageId"] not in failed:
                sqs.delete_message(QueueUrl=self.fifo, ReceiptHandle=record["receiptHandle"])
        return failed

    def settle(self, rounds: int = 4) -> None:
        """Run the pipeline until nothing moves (status writes cause further change events)."""
        for _ in range(rounds):
            self.sync()
            self.match()
            records = self.notifications()
            if records:
                assert self.deliver(records) == []


@pytest.fixture
def flow(fresh_tables: Any, moto: Any, tmp_path: Any, tenant: str) -> Any:
    bus, changes = moto.bus_to_queue()
    sqs = moto.client("sqs")
    fifo = sqs.create_queue(QueueName=f"notify-{uuid.uuid4().hex[:8]}.fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    table = f"{fresh_tables.resources}-subscriptions"
    ensure_subscriptions_table(fresh_tables.client, table)
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
        subscriptions_table=table,
        subscriptions_queue_url=fifo,
        subscriptions_allow_http=True,
        subscriptions_allow_private=True,
        subscriptions_request_timeout_seconds=2.0,
    )
    index_sync.use(index_sync.build(settings))
    aws.use(aws.build(settings))
    yield Flow(settings, build_app(build_dependencies(settings)), changes, fifo, moto, tenant)
    aws.use(None)
    index_sync.use(None)
    fresh_tables.client.delete_table(TableName=table)


def _topic(endpoint: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "aws",
        "criteria": "https://fhirflow.dev/fhir/SubscriptionTopic/Observation",
        "_criteria": {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria", "valueString": "code=x"}]},
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": "id-only"}]},
        },
    }


def _observation(code: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"coding": [{"code": code}]}}


def test_a_committed_change_reaches_the_receiver_through_the_fifo_queue_signed(
    flow: Flow, capsys: pytest.CaptureFixture[str]
) -> None:
    with Receiver() as receiver:
        created = flow.write("POST", "/Subscription", _topic(receiver.url + "/hook"))
        sub_id = created["id"]
        secret = next(e["valueString"] for e in created["channel"]["extension"] if e["url"] == SECRET_EXT)

        # The Subscription's own change: the matcher activates it with a handshake on the FIFO queue.
        flow.sync()
        assert flow.match() == {"batchItemFailures": []}
        handshake = flow.notifications()
        assert len(handshake) == 1
        assert handshake[0]["attributes"]["MessageGroupId"] == f"{flow.tenant}/{sub_id}"
        assert handshake[0]["attributes"]["MessageDeduplicationId"] == json.loads(handshake[0]["body"])["job_id"]
        assert flow.deliver(handshake) == []
        flow.settle()
        assert flow.read(f"/Subscription/{sub_id}")["status"] == "active"

        flow.write("POST", "/Observation", _observation("y"))  # not matching the filter
        matching = flow.write("POST", "/Observation", _observation("x"))
        flow.sync()
        assert flow.match() == {"batchItemFailures": []}
        records = flow.notifications()
        assert len(records) == 1
        message = json.loads(records[0]["body"])
        assert records[0]["attributes"]["MessageGroupId"] == f"{flow.tenant}/{sub_id}"
        assert records[0]["attributes"]["MessageDeduplicationId"] == message["job_id"]
        capsys.readouterr()
        assert flow.deliver(records) == []
        # The deliverer's CloudWatch metrics (EMF lines on its output), without the subscription as a
        # dimension unless a setting says so; the counters kept with the state, in DynamoDB.
        emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
        assert len(emf) == 1
        assert emf[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Service"]]
        assert (emf[0]["NotificationsDelivered"], emf[0]["FailedAttempts"]) == (1, 0)
        assert "SubscriptionId" not in emf[0]
        counted = aws.dynamodb_state(flow.settings).metrics(flow.tenant, sub_id)
        assert (counted.matched, counted.delivered, counted.failed) == (1, 1, 0)
        assert counted.last_latency_ms is not None

        requests = receiver.wait_for(2)
        event = requests[1]
        assert event.path == "/hook"
        headers = {k: v for k, v in event.headers.items() if k.startswith("webhook-")}
        Webhook(secret).verify(event.body, headers)  # raises when the signature does not verify
        assert headers["webhook-id"] == message["job_id"]
        bundle = json.loads(event.body)
        assert bundle["type"] == "history"
        status = bundle["entry"][0]["resource"]
        assert status["resourceType"] == "Parameters"
        kinds = [p.get("valueCode") for p in status["parameter"] if p["name"] == "type"]
        assert kinds == ["event-notification"]
        focus = [
            part["valueReference"]["reference"]
            for p in status["parameter"]
            if p["name"] == "notification-event"
            for part in p["part"]
            if part["name"] == "focus"
        ]
        assert len(focus) == 1
        assert focus[0].endswith(f"Observation/{matching['id']}")


def test_a_failing_endpoint_keeps_its_group_in_order_and_waits_in_the_visibility_timeout(flow: Flow) -> None:
    answers = iter([Answer(200), Answer(503, headers={"Retry-After": "120"})])

    def reply(_request: Any, _index: int) -> Answer:
        return next(answers, Answer(200))

    with Receiver(reply) as receiver:
        created = flow.write("POST", "/Subscription", _topic(receiver.url))
        sub_id = created["id"]
        flow.settle()  # handshake answered 200 → active
        assert flow.read(f"/Subscription/{sub_id}")["status"] == "active"
        flow.write("POST", "/Observation", _observation("x"))
        flow.write("POST", "/Observation", _observation("x"))
        flow.sync()
        flow.match()
        records = flow.notifications(visibility=0)  # only the deliverer's ChangeMessageVisibility hides them
        # Both of the group's messages in one batch, in order, as FIFO hands them out: the first
        # fails (503), so the second must be neither attempted nor deleted (partial batch response).
        assert len(records) == 2
        assert {r["attributes"]["MessageGroupId"] for r in records} == {f"{flow.tenant}/{sub_id}"}
        failed = flow.deliver(records)
        assert failed == [records[0]["messageId"], records[1]["messageId"]]
        assert len(receiver.received) == 2  # handshake + one attempt
        # Retry-After 120 s: the message stays invisible, and with it the whole group.
        sqs = flow.moto.client("sqs")
        assert sqs.receive_message(QueueUrl=flow.fifo, MaxNumberOfMessages=10).get("Messages", []) == []
        log = aws.delivery_log(flow.settings).attempts(f"{flow.tenant}/{sub_id}")
        assert [a["status"] for a in log][:2] == [503, 200]
        flow.sync()
        flow.match()
        assert flow.read(f"/Subscription/{sub_id}")["status"] == "error"


def test_the_ticker_sends_a_heartbeat_to_an_idle_topic_subscription(flow: Flow) -> None:
    import time

    with Receiver() as receiver:
        body = _topic(receiver.url)
        body["channel"]["extension"] = [{"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": 1}]
        created = flow.write("POST", "/Subscription", body)
        flow.settle()
        assert flow.read(f"/Subscription/{created['id']}")["status"] == "active"
        time.sleep(1.1)  # idle for longer than the heartbeat period
        assert aws.tick_handler({}, LambdaContext("fhirflow-subscriptions-tick", "it")) == {"subscriptions": 1}
        records = flow.notifications()
        assert len(records) == 1
        assert records[0]["attributes"]["MessageGroupId"] == f"{flow.tenant}/{created['id']}"
        assert flow.deliver(records) == []
        heartbeat = json.loads(receiver.wait_for(2)[1].body)
        status = heartbeat["entry"][0]["resource"]
        assert [p.get("valueCode") for p in status["parameter"] if p["name"] == "type"] == ["heartbeat"]


def test_a_notification_over_the_sqs_limit_waits_in_the_blobs_bucket_and_is_delivered_whole(flow: Flow) -> None:
    """A full-resource notification of a 300 KB resource: SQS takes at most 256 KB, so the FIFO
    message carries a key to the blobs bucket (moto S3) and the deliverer reads it from there."""
    with Receiver() as receiver:
        subscription = _topic(receiver.url)
        subscription["channel"]["_payload"]["extension"][0]["valueCode"] = "full-resource"
        sub_id = flow.write("POST", "/Subscription", subscription)["id"]
        flow.settle()  # handshake → active
        assert flow.read(f"/Subscription/{sub_id}")["status"] == "active"
        big = {**_observation("x"), "valueString": "v" * 300_000}
        made = flow.write("POST", "/Observation", big)
        flow.sync()
        assert flow.match() == {"batchItemFailures": []}
        records = flow.notifications()
        assert len(records) == 1
        message = json.loads(records[0]["body"])
        assert len(records[0]["body"].encode()) < 256 * 1024
        assert "payload" not in message
        assert message["payload_ref"].startswith(aws.NOTIFICATIONS_PREFIX)
        assert flow.deliver(records) == []
        requests = receiver.wait_for(2)
        bundle = json.loads(requests[-1].body)
        focus = bundle["entry"][1]["resource"]
        assert (focus["id"], focus["valueString"]) == (made["id"], "v" * 300_000)


def test_a_change_committed_after_a_subscription_is_matched_by_a_warm_instance_that_has_not_seen_it(
    flow: Flow,
) -> None:
    """The changes queue is standard (unordered) and matcher instances each cache the subscription
    list: a change committed after a Subscription can reach an instance before the Subscription's
    own change event reaches any. The write hook noted the write before it committed, so the
    instance loads it (and sends the handshake first) before it matches the change."""
    with Receiver() as receiver:
        assert flow.match() == {"batchItemFailures": []}  # a warm instance: its list predates the subscription
        sub_id = flow.write("POST", "/Subscription", _topic(receiver.url + "/hook"))["id"]
        matching = flow.write("POST", "/Observation", _observation("x"))
        flow.sync()
        sqs = flow.moto.client("sqs")
        held, records = [], []
        while got := sqs.receive_message(QueueUrl=flow.changes, MaxNumberOfMessages=10).get("Messages", []):
            for message in got:
                sqs.delete_message(QueueUrl=flow.changes, ReceiptHandle=message["ReceiptHandle"])
                detail = json.loads(message["Body"])["detail"]
                record = {"messageId": message["MessageId"], "body": message["Body"]}
                (held if detail["resourceType"] == "Subscription" else records).append(record)
        assert len(held) == 1
        assert len(records) == 1
        # Only the Observation's event, to the warm instance; the Subscription's is still on its way.
        reply = aws.match_handler({"Records": records}, LambdaContext("fhirflow-subscriptions-match", "it"))
        assert reply == {"batchItemFailures": []}
        queued = flow.notifications()
        kinds = [json.loads(json.loads(r["body"])["payload"])["kind"] for r in queued]
        assert kinds == ["handshake", "event"]  # the handshake first in the group, then the change
        assert {r["attributes"]["MessageGroupId"] for r in queued} == {f"{flow.tenant}/{sub_id}"}
        assert flow.deliver(queued) == []
        # The Subscription's own event arrives late: nothing new (no second handshake, no lost state).
        aws.match_handler({"Records": held}, LambdaContext("fhirflow-subscriptions-match", "it"))
        flow.settle()
        assert flow.read(f"/Subscription/{sub_id}")["status"] == "active"
        requests = receiver.wait_for(2)
        assert len(receiver.received) == 2
        event = json.loads(requests[1].body)["entry"][0]["resource"]
        focus = [
            part["valueReference"]["reference"]
            for p in event["parameter"]
            if p["name"] == "notification-event"
            for part in p["part"]
            if part["name"] == "focus"
        ]
        assert len(focus) == 1
        assert focus[0].endswith(f"Observation/{matching['id']}")
        assert aws.dynamodb_state(flow.settings).generation()[1] == []  # nothing left pending


def test_a_noted_subscription_write_that_never_commits_stops_being_pending_after_the_write_timeout(
    flow: Flow,
) -> None:
    """The hook notes a write before it commits; one that failed never commits. Matchers keep
    checking it until it is older than the longest a write can take, then let it go."""
    state = aws.dynamodb_state(flow.settings)
    now_ms = int(time.time() * 1000)
    state.note_write(flow.tenant, "never-committed", 1, now_ms)
    state.note_write(flow.tenant, "long-failed", 1, now_ms - (aws.PENDING_SECONDS + 1) * 1000)
    assert flow.match() == {"batchItemFailures": []}
    assert state.generation()[1] == [(flow.tenant, "never-committed", 1, now_ms)]
    assert aws.runtime().service.specs == {}
