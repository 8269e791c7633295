"""Adapters build their boto3 clients on first use (issue 13: cold start), not when constructed."""

from __future__ import annotations

from fhirflow.adapters.aws import clients
from fhirflow.adapters.aws.dynamodb_store import DynamoDbResourceStore
from fhirflow.adapters.aws.s3_blobs import S3BlobStore
from fhirflow.adapters.aws.sqs_queue import SqsJobQueue


def test_a_lazy_client_is_built_on_first_use_with_the_project_configuration() -> None:
    lazy = clients.LazyClient("s3", region="eu-central-1")
    assert not lazy.built
    assert lazy.meta.region_name == "eu-central-1"
    assert lazy.built
    assert lazy.real() is lazy.real()
    assert lazy.real().meta.config.connect_timeout == 3


def test_adapters_build_no_client_until_a_call_needs_one() -> None:
    blobs = S3BlobStore("bucket", region="eu-central-1")
    store = DynamoDbResourceStore("table", blobs=blobs, endpoint_url="http://127.0.0.1:1")
    queue = SqsJobQueue("http://127.0.0.1:1/123456789012/q", region="eu-central-1")
    assert not blobs.client.built
    assert not store.client.built
    assert not queue.client.built
    assert store.client.meta.endpoint_url == "http://127.0.0.1:1"
    assert store.client.built
    assert not blobs.client.built


def test_an_injected_client_is_used_as_given() -> None:
    given = clients.client("s3", region="eu-central-1")
    assert S3BlobStore("bucket", client=given).client is given
