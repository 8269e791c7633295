"""Binary content kept beside the resource and moved by URL (issue 13, "Binary through S3 presigned URLs").

API Gateway relays at most 10 MB in and Lambda 6 MB out, so a large Binary cannot travel through
the API. With ``FHIRFLOW_BINARY_DIRECT`` on, a Binary created or updated in its JSON form without
``data`` is answered with a ``presignedPutUrl`` (FHIR Works on AWS's element name, for clients
written for it) to which the client PUTs the bytes; the bytes live under a key of their own per
version (``binary/{tenant}/{id}/{version}``), never in the resource. Reading such a Binary answers
the JSON form with a ``presignedGetUrl``, and the native form (binary.html#rest, the Binary's own
content type) with ``303 See Other`` to that URL. In AWS the URLs are S3 presigned URLs; in the
embedded mode the local gateway plays S3 and serves HMAC-signed, expiring URLs of its own
(:mod:`fhirflow.adapters.filesystem.signed_urls`).

Every URL is handed out by the read or write use case, after its authorization check: a caller
who may not read the Binary gets the read's 404 and no URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fhirflow.runtime import Dependencies

PUT_URL = "presignedPutUrl"
GET_URL = "presignedGetUrl"


class BlobUrls(Protocol):
    """Time-limited URLs that move a blob's bytes without passing through the API."""

    def upload_url(self, key: str, *, expires_in: int, origin: str) -> str:
        """A URL that accepts one HTTP PUT of the bytes for ``key`` until it expires."""
        ...

    def download_url(self, key: str, *, content_type: str, expires_in: int, origin: str) -> str:
        """A URL that answers GET with the bytes of ``key`` in ``content_type`` until it expires."""
        ...

    def exists(self, key: str) -> bool:
        """Whether bytes were uploaded for ``key``."""
        ...


def content_key(tenant: str, id_: str, version: int) -> str:
    return f"binary/{tenant}/{id_}/{version}"


def origin_of(base_url: str, tenant: str) -> str:
    """The server's own URL, without a tenant's ``/tenant/{id}`` (the signed URLs are not per tenant)."""
    return base_url.removesuffix(f"/tenant/{tenant}")


_urls: dict[tuple[str, str], BlobUrls] = {}


def blob_urls(deps: Dependencies) -> BlobUrls:
    """S3 presigned URLs when the blob store is S3, else the local gateway's signed URLs; one per
    process and store, built on first use."""
    settings = deps.settings
    store = deps.blobs
    bucket = getattr(store, "bucket", None)
    cache_key = ("s3", str(bucket)) if bucket else ("files", str(settings.data_dir.resolve()))
    urls = _urls.get(cache_key)
    if urls is None:
        if bucket:
            from fhirflow.adapters.aws.s3_blobs import S3BlobUrls

            urls = S3BlobUrls(store)  # type: ignore[arg-type]
        else:
            from fhirflow.adapters.filesystem.signed_urls import SignedLocalBlobUrls

            urls = SignedLocalBlobUrls.for_data_dir(settings.data_dir)
        _urls[cache_key] = urls
    return urls
