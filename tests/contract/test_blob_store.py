"""The BlobStore contract: files (embedded), S3 (moto) and the in-memory fake behave alike."""

from __future__ import annotations

import os

import pytest

from fhirflow.ports import BlobNotFound, BlobStore


@pytest.fixture(params=["files", "s3", "memory"])
def blobs(request: pytest.FixtureRequest, tmp_path) -> BlobStore:
    if request.param == "files":
        from fhirflow.adapters.filesystem import FileBlobStore

        return FileBlobStore(tmp_path / "blobs")
    if request.param == "s3":
        from fhirflow.adapters.aws.s3_blobs import S3BlobStore

        moto = request.getfixturevalue("moto")
        return S3BlobStore(moto.bucket(), prefix="fhir/", client=moto.client("s3"))
    from fhirflow.adapters.memory import InMemoryBlobStore

    return InMemoryBlobStore()


def test_put_get_overwrite_delete(blobs: BlobStore) -> None:
    blobs.put("resources/t/Binary/b/1-abc.json", b'{"a": 1}', content_type="application/fhir+json")
    assert blobs.get("resources/t/Binary/b/1-abc.json") == b'{"a": 1}'
    blobs.put("resources/t/Binary/b/1-abc.json", b"second")
    assert blobs.get("resources/t/Binary/b/1-abc.json") == b"second"
    blobs.delete("resources/t/Binary/b/1-abc.json")
    with pytest.raises(BlobNotFound):
        blobs.get("resources/t/Binary/b/1-abc.json")


def test_missing_blob_and_idempotent_delete(blobs: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        blobs.get("nothing/here")
    blobs.delete("nothing/here")  # not an error


def test_ten_megabytes_of_arbitrary_bytes_round_trip(blobs: BlobStore) -> None:
    data = os.urandom(10 * 1024 * 1024)
    blobs.put("big/blob", data)
    assert blobs.get("big/blob") == data


def test_keys_are_independent(blobs: BlobStore) -> None:
    blobs.put("a/1", b"one")
    blobs.put("a/2", b"two")
    blobs.delete("a/1")
    assert blobs.get("a/2") == b"two"


def test_file_keys_cannot_escape_the_root(tmp_path) -> None:
    from fhirflow.adapters.filesystem import FileBlobStore

    store = FileBlobStore(tmp_path / "root")
    for key in ("../outside", "/etc/passwd", "a/../../b", "a//b", ""):
        with pytest.raises(ValueError, match="invalid blob key"):
            store.put(key, b"x")
    assert not (tmp_path / "outside").exists()
