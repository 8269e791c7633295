"""Presigned S3 URLs (export files, Binary) are SigV4 at the bucket's regional host, from one signer.

S3 refuses anything but SigV4 for objects encrypted with a KMS key, as the export and blob buckets'
are; boto3 signs presigned URLs with SigV2 in us-east-1 unless its client is told otherwise
(``clients.s3_presigner``). moto serves the URLs: they must fetch the object's bytes.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from fhirflow.adapters.aws.s3_blobs import S3BlobStore, S3BlobUrls

SIGV4 = "X-Amz-Algorithm=AWS4-HMAC-SHA256"


def test_an_export_file_url_is_sigv4_and_fetches_the_kms_encrypted_object(moto) -> None:  # type: ignore[no-untyped-def]
    bucket = moto.bucket()
    key_id = moto.client("kms").create_key()["KeyMetadata"]["KeyId"]
    # Built as the export service builds its store: a bucket and a region, no client of its own.
    store = S3BlobStore(bucket, region=moto.region)
    store.client.put_object(
        Bucket=bucket,
        Key="export/Patient-1.ndjson",
        Body=b'{"resourceType":"Patient"}\n',
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=key_id,
    )
    url = store.presigned_url("export/Patient-1.ndjson", expires_in=600)
    assert SIGV4 in url
    assert "Signature=" not in url.replace("X-Amz-Signature=", "")  # no SigV2 signature beside it
    assert urlsplit(url).hostname == f"{bucket}.s3.{moto.region}.amazonaws.com"
    fetched = requests.get(url, timeout=30)
    assert fetched.status_code == 200
    assert fetched.content == b'{"resourceType":"Patient"}\n'


def test_urls_name_the_regional_host_in_every_region(moto) -> None:  # type: ignore[no-untyped-def]
    store = S3BlobStore("fhirflow-exports-example", region="eu-central-1")
    url = store.presigned_url("a", expires_in=60)
    assert urlsplit(url).hostname == "fhirflow-exports-example.s3.eu-central-1.amazonaws.com"
    assert SIGV4 in url
    assert "%2Feu-central-1%2Fs3%2Faws4_request" in url


def test_binary_urls_sign_with_the_stores_signer(moto) -> None:  # type: ignore[no-untyped-def]
    store = S3BlobStore(moto.bucket(), region=moto.region)
    urls = S3BlobUrls(store)
    assert urls.signer is store.signer
    assert SIGV4 in urls.download_url("b", content_type="text/plain", expires_in=60, origin="")
