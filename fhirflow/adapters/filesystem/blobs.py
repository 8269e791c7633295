"""``FileBlobStore``: blobs as files under one directory (the embedded mode's S3)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fhirflow.ports import BlobNotFound


class FileBlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_of(self, key: str) -> Path:
        """The file that holds ``key`` (the local gateway streams signed-URL transfers to and from it)."""
        return self._path(key)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        # Keys are ours, but a key must never name a file outside the root.
        if any(p in ("..", ".", "") for p in parts) or "\\" in key or "\x00" in key:
            raise ValueError(f"invalid blob key {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write aside, flush to disk, then rename: a reader never sees half a blob, and the blob
        # is on disk before the database row that points at it commits.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
