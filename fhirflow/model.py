"""The transport-neutral request and response every use case works with.

A :class:`FhirRequest` is what a service needs to know about an HTTP interaction, whatever
carried it (an API Gateway proxy event in AWS, the local gateway in the embedded mode).
A :class:`FhirResponse` is what a use case answers; :mod:`fhirflow.http` renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_TENANT = "default"


@dataclass(slots=True)
class FhirRequest:
    method: str
    path: str
    route: str
    """The matched route pattern, e.g. ``/{type}/{id}`` (API Gateway's ``resource``)."""
    path_params: dict[str, str] = field(default_factory=dict)
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    """Header names are lower-case; repeated headers are joined with ``, `` as HTTP allows."""
    body: bytes = b""
    base_url: str = ""
    """The FHIR base URL as the client sees it, without a trailing slash."""
    tenant: str = DEFAULT_TENANT
    request_id: str = ""
    source_ip: str = ""
    principal: object | None = None
    """Who is calling, as the Authenticator found it (None when authorization is off)."""
    auth_failure: str | None = None
    """Why the Authenticator refused the request (``expired``, ``algorithm-not-allowed``...): for
    the log and the audit record, never for the client."""
    parsed_body: Any = None
    """``body`` already parsed as JSON, when the caller has it (a bundle entry's resource): equal
    to ``body``, read-only; None means "parse ``body``"."""

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def param(self, name: str) -> str | None:
        """The last value of a query parameter (FHIR's control parameters are single-valued)."""
        for key, value in reversed(self.query):
            if key == name:
                return value
        return None

    @property
    def resource_type(self) -> str:
        return self.path_params.get("type", "")

    @property
    def resource_id(self) -> str:
        return self.path_params.get("id", "")

    @property
    def content_type(self) -> str:
        """The media type of the body without parameters, lower-case ('' when absent)."""
        raw = self.headers.get("content-type", "")
        return raw.split(";", 1)[0].strip().lower()


@dataclass(slots=True)
class FhirResponse:
    status: int = 200
    resource: dict[str, Any] | None = None
    """A resource to render as the body (subject to ``_summary``, ``_elements`` and ``Prefer``)."""
    raw_json: bytes | None = None
    """The same resource already serialised (the stored form); rendered as-is when nothing asks to reshape it."""
    parsed: dict[str, Any] | None = None
    """``raw_json`` already parsed, when the use case has it (equal to it, read-only): spares a
    bundle parsing each entry's answer again."""
    binary: bytes | None = None
    """A non-FHIR body (Binary content), sent with ``content_type``."""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    honours_prefer_return: bool = False
    """True for create/update/patch answers, where ``Prefer: return=...`` chooses the body (http.html#ops)."""
    subsettable: bool = False
    """True where ``_summary``/``_elements`` apply (read, vread, search)."""

    def body_resource(self) -> dict[str, Any] | None:
        if self.resource is not None:
            return self.resource
        if self.parsed is not None:
            return self.parsed
        if self.raw_json is not None:
            from fhirflow.jsonio import loads

            parsed = loads(self.raw_json)
            if isinstance(parsed, dict):
                return parsed
        return None
