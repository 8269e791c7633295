"""Checks on the path parameters of a request, made once where a request enters the server
(:func:`fhirflow.http.request_from_event`), before any use case sees them.

Path parameters name things the server keeps: tenants, resource types, ids, versions, jobs and
files. Each of them ends up in a storage key, a file name or a response header, so a segment
that no such thing can have is refused here with a 400, rather than failing deep inside a
store (a file name over the file system's limit, a NUL in a ``Location`` header, ``..`` in a
blob key):

- no segment is longer than 64 characters: a FHIR id is at most 64 (datatypes.html#id), and so
  are a tenant, a resource type name and this server's job ids and file names;
- no segment is ``.`` or ``..``: they are dot-segments, which clients remove from a URL
  (RFC 3986 §5.2.4), so nothing stored under one could be addressed again;
- no segment holds a control character;
- a tenant is a letter or digit, then letters, digits, ``.``, ``_`` or ``-`` (the form a token's
  tenant claim must have, fhirflow.authz.authenticator).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fhirflow.errors import BadRequest

MAX_SEGMENT = 64
TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""What a tenant id may look like, wherever one comes from (a path, a token's tenant claim): it
becomes part of every store key. The one definition; :func:`is_tenant` applies it."""
DOT_SEGMENTS = frozenset({".", ".."})


def check_path_params(params: Mapping[str, str]) -> None:
    """Raise :class:`BadRequest` for the first path parameter no stored thing can be named by."""
    for name, value in params.items():
        shown = value[:MAX_SEGMENT].encode("unicode_escape").decode("ascii")
        if len(value) > MAX_SEGMENT:
            raise BadRequest(
                f"The path segment '{shown}...' ({name}) is {len(value)} characters long; "
                f"no {name} here is longer than {MAX_SEGMENT}"
            )
        if value in DOT_SEGMENTS:
            raise BadRequest(f"The path segment '{value}' ({name}) is a dot-segment, which cannot name a {name}")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise BadRequest(f"The path segment '{shown}' ({name}) holds a control character")
        if name == "tenant" and not is_tenant(value):
            raise BadRequest(
                f"'{shown}' is not a valid tenant: a letter or digit, then letters, digits, '.', '_' or '-'"
            )


def is_tenant(value: str) -> bool:
    """Whether ``value`` can name a tenant (:data:`TENANT`)."""
    return TENANT.fullmatch(value) is not None


def is_dot_segment(value: str) -> bool:
    """Whether ``value`` is ``.`` or ``..``: a valid FHIR id by its regex, but not one a URL can carry."""
    return value in DOT_SEGMENTS
