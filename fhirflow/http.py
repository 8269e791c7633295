"""API Gateway REST (v1) proxy events ⇄ :class:`FhirRequest`/:class:`FhirResponse`.

Content negotiation (http://hl7.org/fhir/R4/http.html#mime-type): JSON only for now —
``application/fhir+json`` (default), ``application/json``, ``_format=json``; XML is refused
with 406. ``_pretty``, ``_summary`` and ``_elements`` shape the body; ``Prefer: return``
chooses the body of create/update/patch answers (http.html#ops).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from fhirflow import compression, jsonio, subsetting, webpage
from fhirflow.budget import request_budget
from fhirflow.cors import response_headers
from fhirflow.errors import (
    BadRequest,
    FhirError,
    NotAcceptable,
    NotModified,
    OperationNotSupported,
    PayloadTooLarge,
    information,
    internal_error_outcome,
    outcome_for,
)
from fhirflow.model import DEFAULT_TENANT, FhirRequest, FhirResponse
from fhirflow.pathparams import check_path_params
from fhirflow.qvalues import weighted

if TYPE_CHECKING:
    from fhirflow.authz.audit import AuditSink
    from fhirflow.ports import Authenticator
    from fhirflow.runtime import Dependencies

logger = logging.getLogger("fhirflow.http")

FHIR_JSON = "application/fhir+json"
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir", "text/json"})
XML_TYPES = frozenset({"application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir"})
_FORMAT_ALIASES = {"json": FHIR_JSON, "xml": "application/fhir+xml", "html": "text/html", "ttl": "text/turtle"}

UseCase = Callable[[FhirRequest], FhirResponse]


def request_from_event(event: Mapping[str, Any], *, base_url: str | None = None) -> FhirRequest:
    """Build a FhirRequest from an API Gateway REST proxy event (payload format 1.0)."""
    headers: dict[str, str] = {}
    multi = event.get("multiValueHeaders") or {}
    if multi:
        for name, values in multi.items():
            headers[name.lower()] = ", ".join(values or [])
    else:
        for name, value in (event.get("headers") or {}).items():
            headers[name.lower()] = value
    query: list[tuple[str, str]] = []
    multi_query = event.get("multiValueQueryStringParameters") or {}
    if multi_query:
        for name, values in multi_query.items():
            query.extend((name, v) for v in values or [])
    else:
        query.extend((event.get("queryStringParameters") or {}).items())
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest("The request body is not valid base64") from exc
    else:
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    context = event.get("requestContext") or {}
    path_params = dict(event.get("pathParameters") or {})
    check_path_params(path_params)
    path_tenant = path_params.pop("tenant", None)
    base = base_url or _base_url_from(headers, context)
    if path_tenant:
        base = f"{base}/tenant/{path_tenant}"  # a tenant's FHIR base (routes.TENANT_PREFIX): Location, fullUrl
    return FhirRequest(
        method=str(event.get("httpMethod", "GET")).upper(),
        path=str(event.get("path", "/")),
        route=str(event.get("resource", "")),
        path_params=path_params,
        query=query,
        headers=headers,
        body=raw,
        base_url=base,
        tenant=path_tenant or DEFAULT_TENANT,
        request_id=str(context.get("requestId", "")),
        source_ip=str((context.get("identity") or {}).get("sourceIp", "")),
    )


def _base_url_from(headers: Mapping[str, str], context: Mapping[str, Any]) -> str:
    host = headers.get("host", "localhost")
    proto = headers.get("x-forwarded-proto", "https").split(",")[0].strip()
    stage = context.get("stage") or ""
    # The local gateway and custom domains have no stage prefix in the public URL.
    prefix = f"/{stage}" if stage and stage != "$default" and not context.get("fhirflowLocal") else ""
    return f"{proto}://{host}{prefix}"


def negotiate(request: FhirRequest) -> str:
    """The media type to answer with, or 406 when the client accepts nothing we produce."""
    fmt = request.param("_format")
    if fmt:
        mime = _FORMAT_ALIASES.get(fmt.strip().lower(), fmt.split(";")[0].strip().lower())
        if mime in JSON_TYPES:
            return FHIR_JSON if mime != "application/json" else mime
        raise NotAcceptable(f"_format '{fmt}' is not supported; this server speaks FHIR JSON", expression="_format")
    accept = request.headers.get("accept", "")
    if not accept:
        return FHIR_JSON
    for candidate in _accept_candidates(accept):
        if candidate in (FHIR_JSON, "application/json+fhir", "*/*", "application/*"):
            return FHIR_JSON
        if candidate in JSON_TYPES:
            return "application/json"
    raise NotAcceptable(f"Cannot produce any of the media types in Accept: {accept[:200]}; use application/fhir+json")


def _accept_candidates(accept: str) -> list[str]:
    """The accepted media types, best first (ties in the order given); refused ones left out."""
    ranked = sorted((-weight, position, mime) for position, (mime, weight) in enumerate(weighted(accept)))
    return [mime for minus_weight, _, mime in ranked if minus_weight < 0]


class Application:
    """A service's HTTP face: dispatch by route, map errors once, render the response."""

    def __init__(
        self,
        handlers: Mapping[tuple[str, str], UseCase],
        *,
        base_url: str | None = None,
        authenticator: Authenticator | None = None,
        audit: AuditSink | None = None,
        cors_origins: Sequence[str] = (),
        request_timeout: float = 0.0,
        max_body_bytes: int | None = None,
        max_response_bytes: int | None = None,
    ) -> None:
        self.handlers = dict(handlers)
        self.request_timeout = request_timeout
        """The time budget of a read-only request in seconds (fhirflow.budget); 0: none."""
        self.base_url = base_url
        self.authenticator = authenticator
        self.audit = audit
        self.cors_origins = tuple(cors_origins)
        self.max_body_bytes = max_body_bytes
        self.max_response_bytes = max_response_bytes

    @classmethod
    def for_service(cls, handlers: Mapping[tuple[str, str], UseCase], deps: Dependencies) -> Application:
        """A service's Application configured from its dependencies (base URL, authentication,
        audit, CORS)."""
        return cls(
            handlers,
            base_url=deps.settings.base_url,
            authenticator=deps.authenticator,
            audit=deps.audit,
            cors_origins=deps.settings.cors_origins,
            request_timeout=deps.settings.request_timeout_seconds,
            max_body_bytes=deps.settings.max_body_bytes,
            max_response_bytes=deps.settings.max_response_bytes or None,
        )

    def resolve(self, event: Mapping[str, Any], context: object = None) -> dict[str, Any]:
        if self.audit is None:
            result = self._bounded(self._resolve(event, None, context))
        else:
            started = time.perf_counter()
            seen: list[FhirRequest] = []
            result = self._bounded(self._resolve(event, seen, context))
            # One audit record per request, whatever its outcome (DESIGN.md §5; fhirflow.authz.audit).
            self.audit.record(seen[0] if seen else None, int(result.get("statusCode", 500)), started)
        if self.cors_origins:
            cors = response_headers(self.cors_origins, _event_header(event, "origin"))
            if cors:
                result["headers"] = {**(result.get("headers") or {}), **cors}
        # API Gateway compresses text answers for clients that accept it (minimumCompressionSize)
        # but does not say so to caches; the answer does (fhirflow.compression).
        if compression.varies(int(result.get("statusCode", 500)), result.get("headers") or {}):
            result["headers"] = compression.with_vary(result.get("headers") or {})
        return result

    def _budget(self, request: FhirRequest, context: object) -> float:
        """The request's time budget: reads only (a write must not fail half-way for being slow),
        and within what is left of the Lambda invocation, less a second to answer in."""
        if self.request_timeout <= 0 or not (request.method in ("GET", "HEAD") or request.route.endswith("/_search")):
            return 0.0
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return self.request_timeout
        return max(0.5, min(self.request_timeout, float(remaining()) / 1000 - 1.0))

    def _bounded(self, result: dict[str, Any]) -> dict[str, Any]:
        """Lambda refuses to return more than its payload limit, and API Gateway then answers 502
        with nothing to say why: answer what is wrong instead (the work is done; only the answer
        cannot travel this way)."""
        limit = self.max_response_bytes
        if limit is None or len(result.get("body") or "") < limit // 2:  # JSON escaping at most doubles it
            return result
        size = len(orjson.dumps(result))
        if size <= limit:
            return result
        return _error_event(
            PayloadTooLarge(
                f"The answer would be {size} bytes, over the {limit} this server can return. Ask for less: a "
                "smaller _count, _elements or _summary, fewer _include, or (a Binary) its data through a "
                "smaller resource",
            ),
            pretty=False,
        )

    def _resolve(self, event: Mapping[str, Any], seen: list[FhirRequest] | None, context: object) -> dict[str, Any]:
        try:
            request = request_from_event(event, base_url=self.base_url)
            if self.max_body_bytes is not None and len(request.body) > self.max_body_bytes:
                raise PayloadTooLarge(f"The body is {len(request.body)} bytes; the limit here is {self.max_body_bytes}")
        except FhirError as error:
            return _error_event(error, pretty=False)
        if seen is not None:
            seen.append(request)
        page_depth = webpage.wanted(request)
        if page_depth is not None:
            return webpage.page_event(page_depth)  # a browser's navigation: the page for people
        pretty = (request.param("_pretty") or "").lower() == "true"
        try:
            mime = _negotiate_before_dispatch(request)
            handler = self.handlers.get((request.method, request.route))
            if handler is None:
                raise FhirError(f"No handler for {request.method} {request.route}")
            if self.authenticator is not None:
                request.principal = self.authenticator.authenticate(request)
            _refuse_unknown_operation(request)
            with request_budget(self._budget(request, context)):
                response = handler(request)
            if mime is None and response.binary is None:
                mime = negotiate(request)  # raises the 406 that was deferred for a Binary read
            return webpage.vary_on_accept(request, render(request, response, mime=mime or FHIR_JSON, pretty=pretty))
        except NotModified as not_modified:
            return {"statusCode": 304, "headers": not_modified.headers, "body": ""}
        except FhirError as error:
            return _error_event(error, pretty=pretty)
        except Exception:
            logger.exception("unhandled error", extra={"route": request.route, "request_id": request.request_id})
            return _event(500, {"Content-Type": f"{FHIR_JSON}; charset=utf-8"}, jsonio.dumps(internal_error_outcome()))


def _refuse_unknown_operation(request: FhirRequest) -> None:
    """A ``$name`` segment that reached a route by a path parameter (``/{type}``, ``/{type}/{id}``...)
    is an operation the server does not have there: routes for the ones it has name them literally."""
    for value in request.path_params.values():
        if value.startswith("$"):
            raise OperationNotSupported(
                f"This server does not support the operation {value[:64]} on {request.method} {request.path[:200]}"
            )


def _negotiate_before_dispatch(request: FhirRequest) -> str | None:
    """Refuse an unacceptable Accept before any work is done, except on a Binary read, which may
    answer in the Binary's own content type (binary.html#rest): that one is decided after the read."""
    if request.route.endswith("/.well-known/smart-configuration"):
        return "application/json"  # SMART App Launch: JSON whatever the Accept header says
    try:
        return negotiate(request)
    except NotAcceptable:
        if request.method == "GET" and request.resource_type == "Binary":
            return None
        if request.method == "GET" and request.route.endswith("/_export/{job}/{file}"):
            return None  # a bulk export file is NDJSON whatever Accept says (bulk data export.html)
        raise


def _error_event(error: FhirError, *, pretty: bool) -> dict[str, Any]:
    headers = {"Content-Type": f"{FHIR_JSON}; charset=utf-8", **error.headers}
    return _event(error.status, headers, jsonio.dumps(outcome_for(error), pretty=pretty))


def _event(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    return {"statusCode": status, "headers": headers, "body": body.decode("utf-8"), "isBase64Encoded": False}


def render(request: FhirRequest, response: FhirResponse, *, mime: str, pretty: bool) -> dict[str, Any]:
    headers = dict(response.headers)
    if response.binary is not None:
        headers["Content-Type"] = response.content_type or "application/octet-stream"
        return {
            "statusCode": response.status,
            "headers": headers,
            "body": base64.b64encode(response.binary).decode("ascii"),
            "isBase64Encoded": True,
        }
    body = _body_bytes(request, response, pretty=pretty)
    if body is None:
        return {"statusCode": response.status, "headers": headers, "body": "", "isBase64Encoded": False}
    headers["Content-Type"] = f"{mime}; charset=utf-8"
    return _event(response.status, headers, body)


def _body_bytes(request: FhirRequest, response: FhirResponse, *, pretty: bool) -> bytes | None:
    if response.honours_prefer_return:
        preference = prefer_return(request)
        if preference == "minimal":
            return None
        if preference == "OperationOutcome":
            return jsonio.dumps(information(f"{request.method} succeeded with status {response.status}"), pretty=pretty)
    if response.subsettable:
        shaped = subsetting.shape_from_params(request, response)
        if shaped is not None:
            return jsonio.dumps(shaped, pretty=pretty)
    if response.raw_json is not None and not pretty:
        return response.raw_json
    resource = response.body_resource()
    if resource is None:
        return None
    return jsonio.dumps(resource, pretty=pretty)


def prefer_return(request: FhirRequest) -> str:
    """``Prefer: return=minimal|representation|OperationOutcome`` (RFC 7240), representation by default."""
    for token in request.headers.get("prefer", "").split(","):
        key, _, value = token.strip().partition("=")
        if key.strip().lower() == "return":
            value = value.strip().strip('"')
            if value in ("minimal", "representation", "OperationOutcome"):
                return value
    return "representation"


def prefer_handling(request: FhirRequest) -> str:
    """``Prefer: handling=strict|lenient`` for search (search.html#errors), lenient by default."""
    for token in request.headers.get("prefer", "").split(","):
        key, _, value = token.strip().partition("=")
        if key.strip().lower() == "handling" and value.strip().lower() == "strict":
            return "strict"
    return "lenient"


class LazyApplication:
    """A service's Application, built on the first invocation from ``"module:function"``.

    Handler modules create one at import time; it does no I/O and imports nothing until the
    first event, so importing a handler stays cheap (cold start) and tests can build the
    Application themselves with other dependencies.
    """

    def __init__(self, factory: str) -> None:
        self.factory = factory
        self._app: Application | None = None

    def get(self) -> Application:
        if self._app is None:
            import importlib

            module, _, function = self.factory.partition(":")
            self._app = getattr(importlib.import_module(module), function)()
        return self._app

    def resolve(self, event: Mapping[str, Any], context: object = None) -> dict[str, Any]:
        return self.get().resolve(event, context)


def _event_header(event: Mapping[str, Any], name: str) -> str | None:
    """A header of a proxy event, whatever its case (API Gateway keeps the client's)."""
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return str(value)
    return None
