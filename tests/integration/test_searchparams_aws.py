"""Runtime SearchParameters and ``$reindex`` in the AWS configuration: the DynamoDB catalog and job
store on DynamoDB Local, the OpenSearch index on the fake client of ``test_opensearch_fake.py``,
and the whole flow through the real crud, index-sync and search Applications in process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest

from fhirflow.adapters.aws.dynamodb_reindex_jobs import DynamoDbReindexJobStore
from fhirflow.adapters.aws.dynamodb_searchparams import DynamoDbSearchParamCatalog
from fhirflow.adapters.aws.dynamodb_streams import DynamoDbStreamReader
from fhirflow.adapters.memory import InMemoryEventLedger, InMemoryEventPublisher
from fhirflow.adapters.opensearch.engine import OpenSearchSearchEngine
from fhirflow.adapters.opensearch.reindex import OpenSearchReindexer
from fhirflow.local.gateway import LambdaContext
from fhirflow.reindex_ports import ReindexJob
from fhirflow.runtime import build_dependencies, opensearch_index
from fhirflow.settings import Settings
from fhirflow_crud.app import build_app as build_crud
from fhirflow_index_sync import app as index_sync
from fhirflow_index_sync.handler import lambda_handler
from fhirflow_index_sync.sync import IndexSync
from fhirflow_search.app import build_app as build_search
from fhirflow_search.reindex import ReindexParts, ReindexRunner
from fhirflow_search.settings import SearchSettings
from fhirflow_search.usecase import SearchService
from tests.support.lambda_http import Reply, call
from tests.unit.test_opensearch_fake import FakeOpenSearch
from tests.unit.test_reindex import EYE, eye_colour

# -- the catalog ------------------------------------------------------------------------------


class CountingClient:
    """boto3's DynamoDB client, counting the requests made through it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def counted(**kwargs: Any) -> Any:
            self.calls.append(name)
            return method(**kwargs)

        return counted


@pytest.fixture
def catalog(shared_tables: Any) -> DynamoDbSearchParamCatalog:
    return DynamoDbSearchParamCatalog(shared_tables.resources, client=shared_tables.client)


def codes(catalog: DynamoDbSearchParamCatalog, tenant: str) -> dict[str, bool]:
    return {f"{p.base}.{p.code}": p.searchable for p in catalog.custom_params(tenant)}


def test_a_recorded_parameter_is_indexed_at_once_and_searchable_after_a_mark(
    catalog: DynamoDbSearchParamCatalog, tenant: str
) -> None:
    assert catalog.generation(tenant) == 0
    assert catalog.record(tenant, "eye", 1, eye_colour())
    assert codes(catalog, tenant) == {"Patient.eye-colour": False}
    assert catalog.index_registry(tenant).get("Patient", "eye-colour") is not None
    assert catalog.searchable_registry(tenant).get("Patient", "eye-colour") is None
    since = catalog.generation(tenant)
    assert catalog.mark_searchable(tenant, ["Observation"], None, since) == ()  # another type's walk
    assert catalog.mark_searchable(tenant, [], None, since - 1) == ()  # a walk that started before it
    assert catalog.mark_searchable(tenant, ["Patient"], None, since) == ("Patient.eye-colour",)
    assert catalog.searchable_registry(tenant).get("Patient", "eye-colour") is not None
    assert codes(catalog, tenant) == {"Patient.eye-colour": True}
    assert catalog.custom_params("another-tenant") == ()


def test_replays_and_older_versions_change_nothing(catalog: DynamoDbSearchParamCatalog, tenant: str) -> None:
    assert catalog.record(tenant, "eye", 2, eye_colour())
    generation = catalog.generation(tenant)
    assert not catalog.record(tenant, "eye", 2, eye_colour())  # the same version again
    assert not catalog.record(tenant, "eye", 1, eye_colour(code="old-code"))  # an older one, late
    assert catalog.generation(tenant) == generation
    assert codes(catalog, tenant) == {"Patient.eye-colour": False}
    assert catalog.record(tenant, "eye", 3, None)  # deleted
    assert not catalog.record(tenant, "eye", 2, eye_colour())  # a replay cannot bring it back
    assert codes(catalog, tenant) == {}
    assert catalog.record(tenant, "eye", 4, eye_colour())  # re-created
    assert codes(catalog, tenant) == {"Patient.eye-colour": False}


def test_a_mark_holds_for_the_definition_it_was_made_for(catalog: DynamoDbSearchParamCatalog, tenant: str) -> None:
    catalog.record(tenant, "eye", 1, eye_colour())
    catalog.mark_searchable(tenant, [], None, catalog.generation(tenant))
    catalog.record(tenant, "eye", 2, eye_colour(description="Reworded"))  # same definition
    assert codes(catalog, tenant) == {"Patient.eye-colour": True}
    catalog.record(tenant, "eye", 3, eye_colour(expression="Patient.extension.value"))  # a new one
    assert codes(catalog, tenant) == {"Patient.eye-colour": False}


def test_reads_cost_one_getitem_and_see_another_process_s_change(shared_tables: Any, tenant: str) -> None:
    counting = CountingClient(shared_tables.client)
    reader = DynamoDbSearchParamCatalog(shared_tables.resources, client=counting)
    writer = DynamoDbSearchParamCatalog(shared_tables.resources, client=shared_tables.client)
    writer.record(tenant, "eye", 1, eye_colour())
    first = reader.searchable_registry(tenant)
    counting.calls.clear()
    assert reader.searchable_registry(tenant) is first
    assert reader.index_registry(tenant).get("Patient", "eye-colour") is not None
    assert counting.calls == ["get_item", "get_item"]  # the generation, nothing else
    writer.mark_searchable(tenant, [], None, writer.generation(tenant))
    assert reader.searchable_registry(tenant).get("Patient", "eye-colour") is not None


# -- the job store ----------------------------------------------------------------------------


def test_jobs_are_leased_and_saved_by_revision(shared_tables: Any, tenant: str) -> None:
    store = DynamoDbReindexJobStore(shared_tables.resources, client=shared_tables.client)
    job = ReindexJob(tenant=tenant, id=f"job{tenant[2:]}", types=("Patient",), url=None, created_ms=1)
    store.create(job)
    assert store.get(tenant, job.id) == job

    def claim(worker: str, now: int) -> ReindexJob | None:
        # The open-jobs GSI is shared by every test of the session: look for this test's job.
        for _ in range(20):
            found = store.claim(worker, now, 1_000)
            if found is None or found.id == job.id:
                return found
        return None

    claimed = claim("a", 10)
    assert claimed == job
    assert claim("b", 500) is None  # leased to a until 1010
    assert store.save(claimed, "b", 2_000) is None  # not b's lease
    saved = store.save(claimed, "a", 1_500)
    assert saved is not None
    assert saved.revision == 1
    assert store.save(claimed, "a", 1_500) is None  # a stale revision
    assert claim("b", 2_000) == saved  # the lease ran out
    done = store.save(ReindexJob.from_json({**saved.to_json(), "status": "completed"}), "b", 3_000)
    assert done is not None
    assert store.get(tenant, job.id) == done
    assert claim("c", 10_000) is None  # finished jobs are out of the GSI


def test_a_queued_chunk_leases_its_job_only_at_its_revision_and_when_the_lease_is_free(
    shared_tables: Any, tenant: str
) -> None:
    store = DynamoDbReindexJobStore(shared_tables.resources, client=shared_tables.client)
    job = ReindexJob(tenant=tenant, id=f"chunk{tenant[2:]}", types=(), url=None, created_ms=1)
    store.create(job)

    assert not store.claim_job(tenant, job.id, 1, "a", 10, 1_000)  # a message from a later revision
    assert not store.claim_job(tenant, "missing", 0, "a", 10, 1_000)
    assert store.claim_job(tenant, job.id, 0, "a", 10, 1_000)
    assert not store.claim_job(tenant, job.id, 0, "b", 500, 1_000)  # a's until 1010
    assert store.claim_job(tenant, job.id, 0, "a", 500, 1_000)  # a redelivery to the same worker
    saved = store.save(job, "a", 0)  # the chunk's end gives the lease up
    assert saved is not None
    assert not store.claim_job(tenant, job.id, 0, "b", 600, 1_000)  # its message is stale now
    assert store.claim_job(tenant, job.id, 1, "b", 600, 1_000)  # the successor's
    done = store.save(ReindexJob.from_json({**saved.to_json(), "status": "completed"}), "b", 0)
    assert done is not None
    assert not store.claim_job(tenant, job.id, 2, "c", 10_000, 1_000)  # finished


# -- the whole flow ---------------------------------------------------------------------------


@dataclass
class World:
    settings: Settings
    tenant: str
    fake: FakeOpenSearch
    crud: Any
    search: Any
    parts: ReindexParts
    service: SearchService

    def write(self, method: str, path: str, body: dict[str, Any]) -> Reply:
        reply = call(self.crud, method, f"/tenant/{self.tenant}{path}", body)
        assert reply.status < 300, reply.body[:300]
        return reply

    def sync(self) -> None:
        reader = DynamoDbStreamReader(
            self.settings.dynamodb_table, endpoint_url=self.settings.dynamodb_endpoint, region="us-east-1"
        )
        response = lambda_handler({"Records": list(reader.records())}, LambdaContext("fhirflow-index-sync", "it"))
        assert response["batchItemFailures"] == []

    def find(self, query: str, *, strict: bool = True) -> Reply:
        headers = {"prefer": "handling=strict"} if strict else {}
        return call(self.search, "GET", f"/tenant/{self.tenant}/Patient", headers=headers, query=query)


@pytest.fixture
def world(fresh_tables: Any, tmp_path: Any, tenant: str) -> Any:
    settings = Settings(
        store="dynamodb",
        search_index="opensearch",
        opensearch_url="https://search.invalid",
        data_dir=tmp_path,
        audit="off",
        dynamodb_table=fresh_tables.resources,
        dynamodb_ledger_table=fresh_tables.ledger,
        dynamodb_endpoint=fresh_tables.endpoint,
        aws_region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    fake = FakeOpenSearch()
    index = opensearch_index(settings, client=fake, create_missing=True)
    assert index.catalog is not None  # the settings' catalog: DynamoDB items of the resource table
    sync = IndexSync(index=index, ledger=InMemoryEventLedger(), publisher=InMemoryEventPublisher())
    index_sync.use(index_sync.Components(sync=sync, blobs=None))
    catalog = DynamoDbSearchParamCatalog(fresh_tables.resources, client=fresh_tables.client)
    parts = ReindexParts(
        DynamoDbReindexJobStore(fresh_tables.resources, client=fresh_tables.client),
        OpenSearchReindexer(index, catalog),
        catalog,
    )
    deps = build_dependencies(settings)
    service = SearchService(OpenSearchSearchEngine(index), SearchSettings(), catalog=catalog)
    yield World(settings, tenant, fake, build_crud(deps), build_search(deps, service, parts), parts, service)
    index_sync.use(None)


def patient(id_: str, colour: str | None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": id_, "name": [{"family": "Doe"}]}
    if colour:
        resource["extension"] = [{"url": EYE, "valueCode": colour}]
    return resource


def ids(reply: Reply) -> list[str]:
    assert reply.status == 200, reply.body[:300]
    return sorted(e["resource"]["id"] for e in reply.json().get("entry", []) if e["search"]["mode"] == "match")


def test_a_searchparameter_becomes_searchable_on_older_data_after_reindex(world: World) -> None:
    for id_, colour in (("p1", "blue"), ("p2", "brown"), ("p3", "blue"), ("p4", None)):
        world.write("PUT", f"/Patient/{id_}", patient(id_, colour))
    world.sync()
    world.write("PUT", "/SearchParameter/eye", {**eye_colour(), "id": "eye"})
    world.sync()  # index-sync records it in the catalog

    refused = world.find("eye-colour=blue")
    assert refused.status == 400  # unknown until a reindex covered it
    assert "eye-colour" in refused.json()["issue"][0]["diagnostics"]
    lenient = world.find("eye-colour=blue", strict=False)
    assert ids(lenient) == ["p1", "p2", "p3", "p4"]  # ignored, and said so

    kick = call(world.search, "POST", f"/tenant/{world.tenant}/Patient/$reindex")
    assert kick.status == 202, kick.body
    status_path = kick.headers["content-location"].split("fhir.test", 1)[1]
    runner = ReindexRunner(world.parts, batch_size=2)
    for _ in range(10):
        if not runner.drain():
            break
    status = call(world.search, "GET", status_path)
    assert status.status == 200, status.body
    parameters = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in status.json()["parameter"]}
    assert parameters["status"] == "completed"
    assert parameters["processed"] == 4
    assert parameters["searchable"] == "Patient.eye-colour"

    assert ids(world.find("eye-colour=blue")) == ["p1", "p3"]
    assert ids(world.find("eye-colour=brown")) == ["p2"]


def _sqs_records(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """The queue's messages as Lambda's event source mapping hands them over."""
    got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"])
    return [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m.get("Attributes", {}),
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:reindex",
            "awsRegion": "us-east-1",
        }
        for m in got.get("Messages", [])
    ]


def test_the_worker_lambda_finishes_a_job_from_the_queue_and_polling_only_reads(world: World, moto: Any) -> None:
    """Kick-off → SQS (moto) → the worker Lambda's handler, chunk after chunk, each queueing the
    next, with the job store on DynamoDB Local: the job completes with no status request, and a
    redelivered message changes nothing."""
    import boto3

    from fhirflow.adapters.aws.sqs_queue import SqsJobQueue
    from fhirflow_search import reindex_queue
    from fhirflow_search.reindex_handler import lambda_handler as worker_handler

    for n in range(5):
        world.write("PUT", f"/Patient/p{n}", patient(f"p{n}", "green" if n % 2 else "grey"))
    world.write("PUT", "/SearchParameter/eye", {**eye_colour(), "id": "eye"})
    world.sync()
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName="reindex")["QueueUrl"]
    queue = SqsJobQueue(queue_url, client=sqs)
    parts = ReindexParts(world.parts.jobs, world.parts.reindexer, world.parts.catalog, queue)
    search = build_search(build_dependencies(world.settings), world.service, parts)
    runner = ReindexRunner(parts, batch_size=2, max_batches=1)
    reindex_queue.use(reindex_queue.ReindexChunks(parts, queue, runner=runner))
    try:
        kick = call(search, "POST", f"/tenant/{world.tenant}/$reindex", query="_type=Patient")
        assert kick.status == 202, kick.body
        status_path = kick.headers["content-location"].split("fhir.test", 1)[1]
        for _ in range(3):  # polling does not advance it
            reply = call(search, "GET", status_path)
            assert reply.status == 202
            assert reply.headers["x-progress"] == "queued"

        delivered: list[list[dict[str, Any]]] = []
        for _ in range(20):
            records = _sqs_records(sqs, queue_url)
            if not records:
                break
            delivered.append(records)
            answer = worker_handler({"Records": records}, LambdaContext("fhirflow-reindex", "it"))
            assert answer["batchItemFailures"] == []
            for record in records:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"])
        assert len(delivered) >= 4  # pin, then batches of two: one chunk per message

        for records in delivered:  # every message delivered again (at least once): nothing moves
            assert (
                worker_handler({"Records": records}, LambdaContext("fhirflow-reindex", "it"))["batchItemFailures"] == []
            )
        assert _sqs_records(sqs, queue_url) == []
    finally:
        reindex_queue.use(None)

    status = call(search, "GET", status_path)
    assert status.status == 200, status.body
    final = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in status.json()["parameter"]}
    assert final["status"] == "completed"
    assert final["processed"] == final["total"] == 5
    assert ids(world.find("eye-colour=green")) == ["p1", "p3"]
