"""``S3BlobStore``: blobs as S3 objects (large resource bodies, export files)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from fhirflow.adapters.aws import clients
from fhirflow.ports import BlobNotFound


class S3BlobStore:
    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = client or clients.lazy_client("s3", endpoint_url=endpoint_url, region=region)
        self._endpoint_url = endpoint_url
        self._signer: Any = None

    @property
    def signer(self) -> Any:
        """The client that signs presigned URLs (:func:`clients.s3_presigner`: always SigV4), built on first use."""
        if self._signer is None:
            self._signer = clients.s3_presigner(region=self.client.meta.region_name, endpoint_url=self._endpoint_url)
        return self._signer

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        with clients.translated("The blob store"):
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        try:
            with clients.translated("The blob store"):
                reply = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            if clients.error_code(exc) in ("NoSuchKey", "404"):
                raise BlobNotFound(key) from exc
            raise
        body = reply["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def delete(self, key: str) -> None:
        # DeleteObject on a missing key succeeds: deleting is idempotent, as the port asks.
        with clients.translated("The blob store"):
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def presigned_url(self, key: str, *, expires_in: int) -> str:
        """A URL that lets its holder GET ``key`` for ``expires_in`` seconds without credentials
        (bulk export manifests, whose files are too large for API Gateway and Lambda to relay)."""
        url: str = self.signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.prefix + key}, ExpiresIn=expires_in
        )
        return url


class S3BlobUrls:
    """``BlobUrls`` as S3 presigned URLs signed with the function's role.

    Always SigV4, through the store's signer (:func:`clients.s3_presigner`): S3 refuses other
    signatures for objects encrypted with a KMS key (the blobs bucket's)."""

    def __init__(self, store: S3BlobStore, *, signer: Any = None) -> None:
        self.store = store
        self._signer = signer

    @property
    def signer(self) -> Any:
        return self._signer if self._signer is not None else self.store.signer

    def upload_url(self, key: str, *, expires_in: int, origin: str) -> str:
        url: str = self.signer.generate_presigned_url(
            "put_object", Params={"Bucket": self.store.bucket, "Key": self.store.prefix + key}, ExpiresIn=expires_in
        )
        return url

    def download_url(self, key: str, *, content_type: str, expires_in: int, origin: str) -> str:
        params = {"Bucket": self.store.bucket, "Key": self.store.prefix + key, "ResponseContentType": content_type}
        url: str = self.signer.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)
        return url

    def exists(self, key: str) -> bool:
        try:
            with clients.translated("The blob store"):
                self.store.client.head_object(Bucket=self.store.bucket, Key=self.store.prefix + key)
        except ClientError as exc:
            if clients.error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise
        return True
