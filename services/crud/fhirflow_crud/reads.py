"""read and vread (http://hl7.org/fhir/R4/http.html#read, #vread), with conditional reads
(``If-None-Match``, ``If-Modified-Since`` → 304) and Binary's native form (binary.html#rest)."""

from __future__ import annotations

import base64
import binascii
import re

from fhirflow import jsonio, timefmt, versioning
from fhirflow.errors import Gone, NotAcceptable, NotFound, NotModified
from fhirflow.http import JSON_TYPES
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.ports import ResourceVersion
from fhirflow.runtime import Dependencies
from fhirflow.versioning import MAX_VERSION
from fhirflow_crud.writes import authorized_type


def read(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    rtype = authorized_type(deps, request, "read")
    id_ = request.resource_id
    head = deps.store.current(request.tenant, rtype, id_)
    if head is None:
        raise NotFound(f"{rtype}/{id_} is not known")
    headers = versioning.version_headers(head)
    deps.policy.check_read(request, head)  # before 410, so a deletion does not reveal what existed
    if head.deleted or head.body is None:
        raise Gone(f"{rtype}/{id_} was deleted", headers=headers)
    _check_conditional_read(request, head, headers)
    if rtype == "Binary":
        return binary_read(deps, request, head, headers)
    return FhirResponse(status=200, raw_json=head.body, headers=headers, subsettable=True)


def vread(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    rtype = authorized_type(deps, request, "vread")
    id_ = request.resource_id
    vid = request.path_params.get("vid", "")
    # Version ids are opaque strings: "01" is not version "1" (http.html#vread). Ours count from 1
    # and fit a signed 64-bit integer (the stores' version columns): a longer number names none.
    is_ours = vid.isascii() and vid.isdigit() and str(int(vid)) == vid and int(vid) <= MAX_VERSION
    stored = deps.store.version(request.tenant, rtype, id_, int(vid)) if is_ours else None
    if stored is None:
        raise NotFound(f"{rtype}/{id_} has no version '{vid[:20]}'")
    headers = versioning.version_headers(stored)
    try:
        deps.policy.check_read(request, stored)
    except NotFound:  # word for word what a version never written gets: nothing says the id exists
        raise NotFound(f"{rtype}/{id_} has no version '{vid[:20]}'") from None
    if stored.deleted or stored.body is None:
        raise Gone(f"Version {vid} of {rtype}/{id_} is a deletion", headers=headers)
    if rtype == "Binary":
        return binary_read(deps, request, stored, headers)
    return FhirResponse(status=200, raw_json=stored.body, headers=headers, subsettable=True)


def binary_read(
    deps: Dependencies, request: FhirRequest, stored: ResourceVersion, headers: dict[str, str]
) -> FhirResponse:
    """A Binary's answer: by URL when its bytes were uploaded by URL, else inline as JSON or in its
    own content type (binary.html#rest)."""
    from fhirflow_crud.binary_urls import direct_read

    native = wants_native_binary(request)
    if native and not _accepts(request.header("accept") or "*/*", _content_type(stored)):
        return native_binary(request, stored, headers)  # the 406, before any URL is made
    by_url = direct_read(deps, request, stored, headers, native=native)
    if by_url is not None:
        return by_url
    if native:
        return native_binary(request, stored, headers)
    return FhirResponse(status=200, raw_json=stored.body, headers=headers, subsettable=True)


def _content_type(stored: ResourceVersion) -> str:
    assert stored.body is not None
    return str(jsonio.loads(stored.body).get("contentType") or "application/octet-stream")


def _check_conditional_read(request: FhirRequest, head: ResourceVersion, headers: dict[str, str]) -> None:
    none_match = request.header("if-none-match")
    if none_match is not None:
        tags = {t.strip().removeprefix("W/").removeprefix("w/").strip('"') for t in none_match.split(",")}
        if str(head.version) in tags or "*" in tags:
            raise NotModified("not modified", headers=headers)
        return  # If-None-Match takes precedence over If-Modified-Since (RFC 7232 §6)
    modified_since = request.header("if-modified-since")
    if modified_since is not None:
        since = timefmt.parse_http_date(modified_since)
        if since is not None and head.last_updated // 1000 <= since:
            raise NotModified("not modified", headers=headers)


def wants_native_binary(request: FhirRequest) -> bool:
    """A Binary is returned as FHIR only when the client asks for a FHIR format (binary.html#rest)."""
    if request.param("_format"):
        return False
    accept = request.header("accept") or ""
    media = {part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()}
    return not media & JSON_TYPES


def native_binary(request: FhirRequest, stored: ResourceVersion, headers: dict[str, str]) -> FhirResponse:
    assert stored.body is not None
    binary = jsonio.loads(stored.body)
    content_type = str(binary.get("contentType") or "application/octet-stream")
    accept = request.header("accept") or "*/*"
    if not _accepts(accept, content_type):
        raise NotAcceptable(f"This Binary is {content_type}; Accept allows neither that nor FHIR JSON")
    try:
        content = base64.b64decode(binary.get("data") or "")
    except (binascii.Error, ValueError):
        content = b""
    security = (binary.get("securityContext") or {}).get("reference")
    if security:
        headers = {**headers, "X-Security-Context": str(security)}
    content_type, safety = served_as(content_type)
    return FhirResponse(status=200, binary=content, content_type=content_type, headers={**headers, **safety})


_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(?:\s*;\s*[\x21-\x7e]+(?:[ \t]*[\x21-\x7e]+)*)?")
ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "application/xslt+xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "text/ecmascript",
        "application/ecmascript",
        "text/vbscript",
        "multipart/x-mixed-replace",
    }
)
"""Types a browser runs or renders as a page of the server's origin (a stored Binary of one would
otherwise be stored cross-site scripting); any ``+xml`` type counts too."""


def served_as(content_type: str) -> tuple[str, dict[str, str]]:
    """The Content-Type a Binary is served with in its own form, and the headers that keep a
    browser from running it: never sniff the type; an active type (HTML, SVG, XML, script) is a
    download in a sandbox without scripts or the server's origin. A contentType that is no media
    type (it could not even be a header value) is served as bytes to download."""
    if not _MEDIA_TYPE.fullmatch(content_type):
        return "application/octet-stream", {"X-Content-Type-Options": "nosniff", "Content-Disposition": "attachment"}
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    headers = {"X-Content-Type-Options": "nosniff"}
    if media in ACTIVE_TYPES or media.endswith("+xml"):
        headers["Content-Security-Policy"] = "sandbox"
        headers["Content-Disposition"] = "attachment"
    return content_type, headers


def _accepts(accept: str, content_type: str) -> bool:
    content_type = content_type.split(";", maxsplit=1)[0].strip().lower()  # compare media types, not parameters
    major = content_type.split("/", maxsplit=1)[0]
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("*/*", content_type, f"{major}/*"):
            return True
    return False
