"""The write side of ``OpenSearchSearchIndex`` (the SearchIndex port index-sync uses) on the fake
OpenSearch of ``test_opensearch_fake.py``: bulk bodies, external versions, per-item failures,
index creation, the client built from settings, and index-sync's Lambda handler on top of it.

The fake is a test double of a third-party service (like moto), not of our adapter: the adapter
runs unchanged on it, and it records every bulk body it receives.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest

from fhirflow.adapters.memory import InMemoryBlobStore, InMemoryEventLedger, InMemoryEventPublisher
from fhirflow.adapters.opensearch.bulk import IndexWriteFailed, chunks
from fhirflow.adapters.opensearch.client import client_factory, opensearch_client
from fhirflow.adapters.opensearch.mappings import index_body
from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex
from fhirflow.errors import ServiceUnavailable
from fhirflow.ports import IndexWrite, IndexWriteSkipped
from fhirflow.runtime import build_index
from fhirflow.settings import Settings
from fhirflow_index_sync import app
from fhirflow_index_sync.sync import IndexSync
from tests.unit.test_index_sync import record, sequence
from tests.unit.test_opensearch_fake import FakeOpenSearch


def patient(id_: str, version: int, family: str = "Doe") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": id_, "meta": {"versionId": str(version)}, "name": [{"family": family}]}


def write(id_: str, version: int, *, deleted: bool = False, tenant: str = "t") -> IndexWrite:
    return IndexWrite(tenant, "Patient", id_, version, 1000 + version, None if deleted else patient(id_, version))


def bulk_actions(body: bytes) -> list[dict[str, Any]]:
    """The action lines of a recorded bulk body (every other line; documents in between)."""
    return [orjson.loads(line)["index"] for line in body.splitlines()[::2]]


@pytest.fixture
def fake() -> FakeOpenSearch:
    return FakeOpenSearch()


@pytest.fixture
def index(fake: FakeOpenSearch) -> OpenSearchSearchIndex:
    return OpenSearchSearchIndex(client=fake, index="resources")


def test_a_batch_is_one_bulk_request_of_externally_versioned_writes(
    fake: FakeOpenSearch, index: OpenSearchSearchIndex
) -> None:
    results = index.apply_batch([write("a", 1), write("b", 3), write("a", 2)])
    assert results == [True, True, True]
    [body] = fake.bulk_bodies
    assert bulk_actions(body) == [
        {"_id": "t/Patient/a", "version": 1, "version_type": "external"},
        {"_id": "t/Patient/b", "version": 3, "version_type": "external"},
        {"_id": "t/Patient/a", "version": 2, "version_type": "external"},
    ]
    document = orjson.loads(body.splitlines()[1])
    assert (document["tenant"], document["key"], document["version"], document["deleted"]) == (
        "t",
        "Patient/a",
        1,
        False,
    )
    assert document["resource"] == patient("a", 1)
    assert index.indexed_version("t", "Patient", "a") == 2


def test_replays_and_older_versions_change_nothing(fake: FakeOpenSearch, index: OpenSearchSearchIndex) -> None:
    index.apply_batch([write("a", 2)])
    assert index.apply_batch([write("a", 2), write("a", 1), write("b", 1)]) == [False, False, True]
    assert fake.docs["t/Patient/a"]["version"] == 2


def test_a_deletion_is_a_tombstone_at_its_version(fake: FakeOpenSearch, index: OpenSearchSearchIndex) -> None:
    assert index.apply_batch([write("a", 1), write("a", 2, deleted=True), write("a", 1)]) == [True, True, False]
    tombstone = fake.docs["t/Patient/a"]
    assert (tombstone["deleted"], tombstone["version"], "resource" in tombstone) == (True, 2, False)


def test_a_refused_item_fails_alone_without_quoting_the_document(
    fake: FakeOpenSearch, index: OpenSearchSearchIndex
) -> None:
    fake.refuse["t/Patient/b"] = (400, "mapper_parsing_exception")
    first, second, third = index.apply_batch([write("a", 1), write("b", 1), write("c", 1)])
    assert (first, third) == (True, True)
    assert isinstance(second, IndexWriteFailed)
    assert (second.status, second.error_type, second.retryable) == (400, "mapper_parsing_exception", False)
    assert "quoted" not in str(second)  # the item's reason may hold field values (PHI)


def test_a_failed_request_fails_its_writes_and_skips_the_next_requests(fake: FakeOpenSearch) -> None:
    index = OpenSearchSearchIndex(client=fake, max_bulk_bytes=1)  # one write per request
    fake.down = True
    results = index.apply_batch([write("a", 1), write("b", 1)])
    assert isinstance(results[0], ServiceUnavailable)
    assert isinstance(results[1], IndexWriteSkipped)
    assert len(fake.bulk_bodies) == 0
    with pytest.raises(ServiceUnavailable):
        index.apply("t", "Patient", "a", 1, 1, patient("a", 1))


def test_a_resource_whose_document_cannot_be_built_fails_alone(index: OpenSearchSearchIndex) -> None:
    broken = IndexWrite("t", "Patient", "x", 1, 1, {"resourceType": "Patient"})  # an indexed resource has an id
    results = index.apply_batch([write("a", 1), broken, write("c", 1)])
    assert (results[0], results[2]) == (True, True)
    assert isinstance(results[1], Exception)


def test_bodies_are_cut_by_size_without_separating_an_action_from_its_document(fake: FakeOpenSearch) -> None:
    index = OpenSearchSearchIndex(client=fake, max_bulk_bytes=1500)
    assert index.apply_batch([write(f"p{n}", 1) for n in range(6)]) == [True] * 6
    assert len(fake.bulk_bodies) > 1
    ids = [action["_id"] for body in fake.bulk_bodies for action in bulk_actions(body)]
    assert ids == [f"t/Patient/p{n}" for n in range(6)]
    assert all(len(body.splitlines()) % 2 == 0 for body in fake.bulk_bodies)


def test_chunks_keep_an_oversized_write_alone() -> None:
    assert [(start, end) for start, end, _ in chunks([b"a" * 5, b"b" * 20, b"c" * 5, b"d" * 5], 10)] == [
        (0, 1),
        (1, 2),
        (2, 4),
    ]


def test_the_first_write_creates_the_missing_index_with_the_mapping_once(fake: FakeOpenSearch) -> None:
    index = OpenSearchSearchIndex(client=fake, index="resources", create_missing=True)
    index.apply_batch([write("a", 1)])
    index.apply_batch([write("b", 1)])
    assert fake.created == {"resources": index_body()}
    other_process = OpenSearchSearchIndex(client=fake, index="resources", create_missing=True)
    assert other_process.apply_batch([write("c", 1)]) == [True]  # exists already: not created again


def test_losing_the_race_to_create_the_index_is_harmless(fake: FakeOpenSearch) -> None:
    class CreatedMeanwhile(FakeOpenSearch):
        """The index appears between the existence check and the create (another container made it)."""

        def __init__(self) -> None:
            super().__init__()
            self.indices.exists = lambda **_: False  # type: ignore[method-assign]

    racer = CreatedMeanwhile()
    racer.indices.create(index="resources", body={})
    index = OpenSearchSearchIndex(client=racer, index="resources", create_missing=True)
    assert index.apply_batch([write("a", 1)]) == [True]


# -- the client, from settings ------------------------------------------------------------------


def opensearch_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "search_index": "opensearch",
        "opensearch_url": "https://search-fhir.eu-west-1.es.amazonaws.com",
        "aws_region": "eu-west-1",
        **overrides,
    }
    return Settings(**values)


def test_build_index_takes_a_client_and_the_settings_index_name(fake: FakeOpenSearch) -> None:
    index = build_index(opensearch_settings(opensearch_index="fhir-prod"), client=fake)
    assert isinstance(index, OpenSearchSearchIndex)
    assert index.apply("t", "Patient", "a", 1, 1, patient("a", 1))
    assert fake.created.keys() == {"fhir-prod"}  # index-sync creates the index it writes


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"opensearch_url": None}, "FHIRFLOW_OPENSEARCH_URL"),
        ({"opensearch_url": "search-fhir.example.org"}, "http"),
        ({"aws_region": None}, "AWS_REGION"),
        ({"opensearch_auth": "basic"}, "FHIRFLOW_OPENSEARCH_AUTH"),
        ({"opensearch_service": "s3"}, "FHIRFLOW_OPENSEARCH_SERVICE"),
    ],
)
def test_settings_that_cannot_work_are_refused_when_the_index_is_built(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_index(opensearch_settings(**overrides))


def test_the_client_is_signed_with_sigv4_for_the_configured_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from opensearchpy import Urllib3AWSV4SignerAuth

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = client_factory(opensearch_settings(opensearch_service="aoss"))()
    [connection] = client.transport.connection_pool.connections
    assert isinstance(connection.http_auth, Urllib3AWSV4SignerAuth)
    assert (connection.http_auth.signer.service, connection.http_auth.signer.region) == ("aoss", "eu-west-1")
    assert connection.use_ssl
    plain = opensearch_client("http://127.0.0.1:9200")
    assert plain.transport.connection_pool.connections[0].http_auth is None


def test_building_the_index_neither_imports_opensearch_py_nor_connects() -> None:
    """The client is built on the first request: a cold start that never searches pays nothing."""
    code = (
        "import sys\n"
        "from fhirflow.runtime import build_index\n"
        "from fhirflow.settings import Settings\n"
        "index = build_index(Settings(search_index='opensearch', opensearch_url='https://127.0.0.1:1',"
        " aws_region='eu-west-1'))\n"
        "assert type(index).__name__ == 'OpenSearchSearchIndex'\n"
        "assert 'opensearchpy' not in sys.modules, 'imported at build time'\n"
        "assert 'boto3' not in sys.modules, 'credentials read at build time'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- index-sync's handler on the OpenSearch index ---------------------------------------------


@pytest.fixture
def world(fake: FakeOpenSearch, index: OpenSearchSearchIndex):  # type: ignore[no-untyped-def]
    publisher = InMemoryEventPublisher()
    app.use(
        app.Components(IndexSync(index=index, ledger=InMemoryEventLedger(), publisher=publisher), InMemoryBlobStore())
    )
    yield publisher
    app.use(None)


def run(*records: dict[str, Any]) -> list[str]:
    from fhirflow.local.gateway import LambdaContext
    from fhirflow_index_sync.handler import lambda_handler

    response = lambda_handler({"Records": list(records)}, LambdaContext("index-sync", "test"))
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_a_stream_batch_is_one_bulk_request(fake: FakeOpenSearch, world: InMemoryEventPublisher) -> None:
    batch = [record("Patient", "a", 1), record("Patient", "b", 1), record("Patient", "a", 2, deleted=True)]
    assert run(*batch) == []
    assert len(fake.bulk_bodies) == 1
    assert [(e.id, e.version_id, e.operation) for e in world.events] == [
        ("a", "1", "create"),
        ("b", "1", "create"),
        ("a", "2", "delete"),
    ]


def test_a_refused_item_fails_its_record_and_the_rest_and_the_retry_announces_in_order(
    fake: FakeOpenSearch, world: InMemoryEventPublisher
) -> None:
    batch = [record("Patient", "a", 1), record("Patient", "b", 1), record("Patient", "c", 1)]
    fake.refuse["t/Patient/b"] = (503, "unavailable_shards_exception")
    assert run(*batch) == [sequence(r) for r in batch[1:]]
    assert [e.id for e in world.events] == ["a"]
    assert "t/Patient/c" in fake.docs  # the bulk applied it; it is announced after b, on the retry
    del fake.refuse["t/Patient/b"]
    assert run(*batch[1:]) == []  # what Lambda re-delivers: from the first failure on
    assert [e.id for e in world.events] == ["a", "b", "c"]
    assert run(*batch) == []  # a replay of the whole batch: no-ops in the index, nothing announced
    assert [e.id for e in world.events] == ["a", "b", "c"]
