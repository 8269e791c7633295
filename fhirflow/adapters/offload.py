"""Where resource bodies too large for the store's own records go: a BlobStore, under a key
that is unique per write attempt (DESIGN.md §3, "Bodies over a threshold go to S3").

Both stores write the blob before their transaction and delete it again when the transaction
fails, so a committed version never points at a missing blob. The key carries a random part:
two writers racing for the same version number must never share (and then delete) one blob.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote

BODY_CONTENT_TYPE = "application/fhir+json"


def body_key(tenant: str, type_: str, id_: str, version: int) -> str:
    """A fresh key for one version's body: readable by tenant/type/id, unique per attempt."""
    return f"resources/{quote(tenant, safe='')}/{type_}/{id_}/{version}-{uuid.uuid4().hex}.json"
