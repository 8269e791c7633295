"""Filesystem adapters for the embedded mode."""

from fhirflow.adapters.filesystem.blobs import FileBlobStore

__all__ = ["FileBlobStore"]
