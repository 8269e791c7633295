"""Response compression (RFC 9110 §8.4.1 content codings, §12.5.3 Accept-Encoding).

In AWS, API Gateway compresses a response when the client accepts it and the body is at least
the RestApi's minimum compression size (``MIN_COMPRESSED_BYTES``, set in
``fhirflow_infra.api``); the local gateway does the same here, so that clients see the same
answers in both modes. Only text-like types are compressed: FHIR JSON/XML, NDJSON, HTML and
other ``text/*``; a Binary's own bytes (images, PDFs, archives) usually gain nothing.

Every compressible answer carries ``Vary: Accept-Encoding`` (whether or not this one was
compressed), so a shared cache does not hand a gzip body to a client that cannot read it.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from fhirflow.qvalues import weighted

MIN_COMPRESSED_BYTES = 1024
"""Bodies smaller than this go as they are: the gzip framing (~20 bytes) and the CPU are not
worth it, and API Gateway's ``minimumCompressionSize`` uses the same number."""

GZIP_LEVEL = 4
"""Measured on /metadata (631 KB): level 4 makes 35 KB in ~3 ms, zlib's default 6 makes 27 KB in ~9 ms,
level 1 makes 50 KB in ~2 ms; a server's CPU is worth more than the last 8 KB."""

_TEXT_SUFFIXES = ("+json", "+xml", "+ndjson")
_TEXT_TYPES = frozenset(
    (
        "application/json",
        "application/xml",
        "application/ndjson",
        "application/x-ndjson",
        "application/javascript",
        "image/svg+xml",
    )
)


def is_compressible(content_type: str | None) -> bool:
    """Whether a body of this media type is text worth compressing."""
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith(_TEXT_SUFFIXES)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip: listed (or ``*``) with a non-zero q-value, and not
    refused by name (``gzip;q=0`` wins over ``*``)."""
    if not accept_encoding:
        return False
    weights = dict(weighted(accept_encoding))
    if "gzip" in weights:
        return weights["gzip"] > 0
    if "x-gzip" in weights:
        return weights["x-gzip"] > 0
    return weights.get("*", 0.0) > 0


def gzip_bytes(payload: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: the gzip container (RFC 1952)
    return compressor.compress(payload) + compressor.flush()


def varies(status: int, headers: Mapping[str, str]) -> bool:
    """Whether this answer's representation depends on Accept-Encoding: a text body, or a 304
    (which carries the Vary its 200 would have, RFC 9110 §15.4.5)."""
    if status == 304:
        return True
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    return status != 204 and is_compressible(content_type)


def with_vary(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with ``Accept-Encoding`` added to ``Vary`` (kept once, other fields kept)."""
    result = dict(headers)
    name = next((k for k in result if k.lower() == "vary"), "Vary")
    fields = [f.strip() for f in result.get(name, "").split(",") if f.strip()]
    if not any(f.lower() in ("accept-encoding", "*") for f in fields):
        fields.append("Accept-Encoding")
    result[name] = ", ".join(fields)
    return result
