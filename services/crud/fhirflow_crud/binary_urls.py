"""Binary content by presigned URL (fhirflow.binarycontent): the upload URL in a write's answer,
the download URL in a read's, each only after the use case's own authorization."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhirflow import jsonio
from fhirflow.binarycontent import GET_URL, PUT_URL, blob_urls, content_key, origin_of
from fhirflow.errors import PayloadTooLarge
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.ports import ResourceVersion
from fhirflow.runtime import Dependencies


def check_inline_size(deps: Dependencies, size: int) -> None:
    """Content larger than the threshold goes by URL: refused here with a 413 that says how, as API
    Gateway would refuse it anyway beyond its 10 MB."""
    limit = deps.settings.binary_direct_bytes
    if deps.settings.binary_direct and size > limit:
        raise PayloadTooLarge(
            f"Binary content of {size} bytes is over the {limit} bytes accepted through the API: create the "
            f"Binary in JSON without data and PUT the bytes to the {PUT_URL} of the answer",
            expression="Binary.data",
        )


def inline_size(resource: dict[str, Any]) -> int:
    data = resource.get("data")
    return len(data) * 3 // 4 if isinstance(data, str) else 0


UseCase = Callable[[Dependencies, FhirRequest], FhirResponse]


WROTE = {"create": (201,), "update": (200, 201)}
"""The interactions that offer an upload URL, and the statuses by which they made a version: a
conditional create that found a match (200) hands out nothing."""


def offering_upload(use_case: UseCase, interaction: str) -> UseCase:
    """``use_case`` as a direct request reaches it: for create and update, its answer for a Binary
    written without data carries the upload URL. Bundle entries call the use cases themselves and
    hand out none (a transaction's versions are not known to be committed when the entry answers)."""
    wrote = WROTE.get(interaction)
    if wrote is None:
        return use_case

    def write_then_offer(deps: Dependencies, request: FhirRequest) -> FhirResponse:
        response = use_case(deps, request)
        if request.resource_type == "Binary" and response.status in wrote:
            return with_upload_url(deps, request, response)
        return response

    return write_then_offer


def with_upload_url(deps: Dependencies, request: FhirRequest, response: FhirResponse) -> FhirResponse:
    """A written Binary without data: its answer carries the URL its bytes are to be PUT to."""
    stored = response.body_resource()
    if not deps.settings.binary_direct or stored is None or "data" in stored:
        return response
    key = content_key(request.tenant, str(stored["id"]), int(stored["meta"]["versionId"]))
    url = blob_urls(deps).upload_url(
        key, expires_in=deps.settings.binary_url_seconds, origin=origin_of(request.base_url, request.tenant)
    )
    response.resource = {**stored, PUT_URL: url}
    response.raw_json = response.parsed = None
    return response


def direct_read(
    deps: Dependencies, request: FhirRequest, stored: ResourceVersion, headers: dict[str, str], *, native: bool
) -> FhirResponse | None:
    """The answer for a Binary whose bytes were uploaded by URL: the native form redirects (303)
    to a download URL, the JSON form carries it; None when the content is inline."""
    if not deps.settings.binary_direct or stored.body is None:
        return None
    binary = jsonio.loads(stored.body)
    if "data" in binary:
        return None
    urls = blob_urls(deps)
    key = content_key(request.tenant, stored.id, stored.version)
    if not urls.exists(key):
        return None
    content_type = str(binary.get("contentType") or "application/octet-stream")
    url = urls.download_url(
        key,
        content_type=content_type,
        expires_in=deps.settings.binary_url_seconds,
        origin=origin_of(request.base_url, request.tenant),
    )
    if native:
        return FhirResponse(status=303, binary=b"", content_type=content_type, headers={**headers, "Location": url})
    return FhirResponse(status=200, resource={**binary, GET_URL: url}, headers=headers, subsettable=True)
