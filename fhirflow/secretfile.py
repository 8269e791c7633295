"""Secrets kept in the data directory, created once even when processes race to create them.

Several processes share a data directory (``fhirflow serve --workers``, ``fhirflow import
--jobs``); each may be the first to need a key. The first writer wins: the content is written to
a private temporary file and hard-linked into place, which fails if the file exists, so nobody
ever reads a half-written or a second, different key.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's bytes; when it does not exist, ``make()``'s, written readable by the owner only."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(make())
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another process was first: its key is the key
    finally:
        temporary.unlink()
    return path.read_bytes()
